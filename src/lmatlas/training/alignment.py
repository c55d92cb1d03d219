"""The losses and estimates of learning from preferences, as small functions over tensors.

- the reward model's pairwise loss (InstructGPT): ``-log sigmoid(r_chosen - r_rejected - margin)``,
  with an optional centring term that keeps the rewards near zero;
- DPO's sigmoid loss, IPO's squared loss and the hinge loss, over the log-probability ratios of
  the policy to a frozen reference, and the implicit rewards ``beta * log ratio`` they log;
- for online training: the per-token log-probabilities of replies, the KL estimate to the
  reference, the group baselines of RLOO and GRPO, generalised advantage estimation (GAE) and
  PPO's clipped objectives.

Shapes: a pair batch is ``(pairs,)``; a rollout is ``(sequences, reply tokens)`` with a mask of
the reply's real tokens.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

DPO_LOSSES = ("sigmoid", "ipo", "hinge")
ONLINE_METHODS = ("grpo", "rloo", "ppo")


def reward_pair_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None,
                     centring: float | None = None) -> torch.Tensor:
    """Per-pair loss of a reward model: the chosen reply should score above the rejected one
    (by at least ``margin``); ``centring`` adds ``c * (r_chosen + r_rejected)**2``."""
    delta = chosen - rejected if margin is None else chosen - rejected - margin
    loss = -F.logsigmoid(delta)
    if centring:
        loss = loss + centring * (chosen + rejected) ** 2
    return loss


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, kind: str = "sigmoid",
             chosen_tokens: torch.Tensor | None = None, rejected_tokens: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair loss, chosen rewards, rejected rewards) from the summed log-probabilities of
    each reply under the policy and the reference. The rewards are ``beta * (policy - reference)``
    (detached). IPO compares the log ratios per reply token (its authors' normalisation), so it
    needs the replies' token counts."""
    chosen_ratio, rejected_ratio = chosen_logps - ref_chosen, rejected_logps - ref_rejected
    if kind == "sigmoid":
        loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    elif kind == "hinge":
        loss = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    elif kind == "ipo":
        delta = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        loss = (delta - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {kind!r}; choose one of {', '.join(DPO_LOSSES)}")
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each position: ``logits`` (batch, length, vocab) predicting ``targets``
    (batch, length)."""
    logits = logits.float()
    return torch.gather(logits.log_softmax(-1), -1, targets.unsqueeze(-1)).squeeze(-1)


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens the policy sampled: Schulman's
    k3, ``exp(ref - pol) - (ref - pol) - 1``, never negative, unbiased, and exactly zero where
    the two models agree."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def group_advantages(rewards: torch.Tensor, group: int, method: str) -> torch.Tensor:
    """Advantages of ``rewards`` laid out as consecutive groups of ``group`` replies to one
    prompt. RLOO: each reward less the mean of the others in its group; GRPO: the reward less the
    group's mean, over the group's standard deviation."""
    r = rewards.view(-1, group)
    if method == "rloo":
        baseline = (r.sum(1, keepdim=True) - r) / max(group - 1, 1)
        return (r - baseline).reshape(-1)
    if method == "grpo":
        return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).reshape(-1)
    raise ValueError(f"no group advantages for {method!r}")


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) by generalised advantage estimation over each row's real tokens
    (``mask``, a prefix of the row): ``delta_t = r_t + gamma V_{t+1} - V_t`` and
    ``A_t = delta_t + gamma lam A_{t+1}``, with ``V`` zero after the last token."""
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        following = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * following - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


def clipped_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                        clip: float) -> torch.Tensor:
    """PPO's per-token surrogate: ``-min(ratio A, clip(ratio, 1-e, 1+e) A)``."""
    ratio = torch.exp(logps - old_logps)
    return -torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float) -> torch.Tensor:
    """PPO's per-token value loss: the larger of the plain and the clipped squared error, halved."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` shifted and scaled to mean 0, variance 1 over the masked entries."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask.to(x.dtype)


__all__ = ["DPO_LOSSES", "ONLINE_METHODS", "clipped_policy_loss", "clipped_value_loss", "dpo_loss", "gae",
           "group_advantages", "kl_estimate", "masked_mean", "reward_pair_loss", "token_logps", "whiten"]
