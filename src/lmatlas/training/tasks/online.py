"""Online learning from a reward: the policy samples replies to prompts (through the generation
engine), a reward scores them, and the policy moves toward the better ones while a KL term keeps
it near a frozen reference. Three ways to turn rewards into a loss:

- ``grpo``: each of a prompt's ``group`` replies is compared with its group (reward less the
  group mean, over its deviation); the per-token KL estimate is a term of the loss;
- ``rloo``: REINFORCE with a leave-one-out baseline, the KL a penalty on the reward;
- ``ppo`` (InstructGPT): a value head on the policy, per-token rewards (the KL penalty at each
  token, the reward at the last), GAE, the clipped policy and value objectives.

A rollout serves ``updates`` optimizer steps (PPO's epochs; ratios then depart from 1 and the
clipping acts). Each step logs the mean reward and the KL to the reference (the mean per-token
estimate over the replies).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ... import runtime
from ...errors import LmatlasError
from .. import alignment as A
from ..data import EpochSampler, rank_slice
from ..distributed import Context
from ..pairs import Prompt
from .base import DataPosition, ModelTask, load_weights

VALUE_FILE = "value_head.pt"


# ---------------------------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------------------------


class RewardFailed(Exception):
    """The reward of a batch could not be had; the step is skipped."""


def load_reward(spec: str) -> "Callable[..., list[float]]":
    """``module:function`` (a module name, or a .py file) or a reward model (a folder or hub id with
    a one-output classification head): a callable from (prompts, completions, **columns) to one number per completion."""
    if ":" in spec and not Path(spec).exists():
        module_name, _, attr = spec.rpartition(":")
        try:
            if module_name.endswith(".py"):
                name = "lmatlas_reward_" + Path(module_name).stem
                loader = importlib.util.spec_from_file_location(name, module_name)
                if loader is None:
                    raise ImportError(module_name)
                module = importlib.util.module_from_spec(loader)
                sys.modules[name] = module
                loader.loader.exec_module(module)
            else:
                module = importlib.import_module(module_name)
        except (ImportError, OSError) as e:
            raise LmatlasError(f"--reward {spec}: cannot import {module_name} ({e})") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise LmatlasError(f"--reward {spec}: {module_name} has no function {attr!r}")
        return RewardFunction(fn, spec)
    return RewardModel(spec)


class RewardFunction:
    """A Python function of ``prompts`` and ``completions`` (and of any other column of the
    prompt file it names, or ``**kwargs``), returning a number per completion."""

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name
        params = inspect.signature(fn).parameters.values()
        self.takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
        self.names = {p.name for p in params}

    def __call__(self, prompts: list[str], completions: list[str], columns: dict[str, list]) -> list[float]:
        extra = {k: v for k, v in columns.items() if self.takes_all or k in self.names}
        try:
            values = self.fn(prompts=prompts, completions=completions, **extra)
        except Exception as e:  # the user's code: any failure skips the step
            raise RewardFailed(f"the reward function {self.name} raised {type(e).__name__}: {e}") from None
        return check_rewards(values, len(completions), f"the reward function {self.name}")


def check_rewards(values: Any, n: int, who: str) -> list[float]:
    try:
        values = list(values)
    except TypeError:
        raise RewardFailed(f"{who} returned {type(values).__name__}, not a list of {n} numbers") from None
    if len(values) != n:
        raise RewardFailed(f"{who} returned {len(values)} values for {n} completions")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RewardFailed(f"{who} returned {v!r}, not a finite number")
    return [float(v) for v in values]


class RewardModel:
    """A one-output sequence classifier (``lmatlas train reward``) scoring prompt + completion
    in its own tokenizer (and chat template)."""

    def __init__(self, spec: str):
        import warnings

        from ...loader import load
        from ...tokenizer import load_tokenizer

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = load(spec, head="sequence-classification").eval()
            tokenizer = load_tokenizer(spec)
        except LmatlasError as e:
            raise LmatlasError(f"--reward {spec}: not a reward model nor module:function ({e})") from None
        if model.config.num_labels != 1:
            raise LmatlasError(f"--reward {spec}: a reward model has one output, not {model.config.num_labels}")
        self._use(model, tokenizer, spec)

    @classmethod
    def of(cls, model, tokenizer, name: str) -> "RewardModel":
        """A reward model already in memory (a one-output classifier and its tokenizer)."""
        scorer = cls.__new__(cls)
        scorer._use(model.eval(), tokenizer, name)
        return scorer

    def _use(self, model, tokenizer, name: str) -> None:
        from ..finetune import use_pad_token

        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.pad_id = use_pad_token(model, tokenizer) if model.is_decoder else (tokenizer.pad_token_id or 0)

    @torch.no_grad()
    def __call__(self, prompts, completions, columns):
        from ..finetune import pad
        from ..pairs import encode_reply

        rows = []
        for p, c in zip(prompts, completions):
            ids, reply = encode_reply(self.tokenizer, p, c, f"the reward model {self.name}", "completion")
            rows.append({"input_ids": ids + reply})
        batch = pad(rows, self.pad_id)
        scores = self.model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
        return scores.float().tolist()


# ---------------------------------------------------------------------------------------------
# Rollouts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    group: int = 4  # replies per prompt
    max_new_tokens: int = 32
    temperature: float = 1.0


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def reply_mask(replies: torch.Tensor, eos: list[int]) -> torch.Tensor:
    """1 on each reply's tokens up to and including its first end-of-sequence token."""
    if not eos:
        return torch.ones_like(replies)
    ended = torch.isin(replies, torch.tensor(eos)).long().cumsum(1)
    # a token counts until the one after the first eos
    return ((ended - torch.isin(replies, torch.tensor(eos)).long()) == 0).long()


def reply_logps(module, batch: dict[str, torch.Tensor], value: bool = False):
    """Per-token log-probabilities (batch, reply length) of the replies under ``module`` (a
    policy, or a ``PolicyWithValue`` and then also its values)."""
    from ...generation.run import positions

    start = batch["prompt_length"]
    ids, mask = batch["input_ids"], batch["attention_mask"]
    out = module(ids, attention_mask=mask, position_ids=positions(mask))
    logits = out.logits[:, start - 1 : -1]
    logps = A.token_logps(logits, ids[:, start:])
    if value:
        return logps, out["state_values"][:, start - 1 : -1]
    return logps


class PolicyWithValue(nn.Module):
    """PPO's model: the policy and a linear value head over its last hidden states."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.value = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        out = self.policy(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=True)
        out["state_values"] = self.value(out.hidden_states[-1]).squeeze(-1).float()
        return out


class OnlineTask(DataPosition, ModelTask):
    metric = "reward"

    def __init__(self, method: str, policy, reference, tokenizer, tokenizer_dir, prompts: list[Prompt],
                 dev: list[Prompt], reward: Callable, seed: int, sampling: Sampling, beta: float = 0.04,
                 clip: float = 0.2, updates: int = 1, gamma: float = 1.0, lam: float = 0.95,
                 value_coef: float = 0.1):
        module = PolicyWithValue(policy) if method == "ppo" else policy
        super().__init__(module, tokenizer_dir)
        self.name, self.method = method, method
        self.policy, self.reference = policy, reference.eval().requires_grad_(False)
        self.tokenizer, self.prompts, self.dev, self.reward = tokenizer, prompts, dev, reward
        self.sampling, self.beta, self.clip, self.updates = sampling, beta, clip, updates
        self.gamma, self.lam = gamma, lam
        self.pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        self.eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        gen_eos = policy.config.generation.get("eos_token_id") if policy.config.generation else None
        for e in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
            if e is not None and e not in self.eos:
                self.eos.append(e)
        self.weights = {"loss": 1.0, "reward": 0.0, "kl": 0.0}
        if method == "ppo":
            self.weights["value_loss"] = value_coef
        self.sampler = EpochSampler(len(prompts), seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.rollout: dict[str, Any] | None = None
        self.uses = 0

    # -- sampling ---------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, prompts: list[Prompt], group: int, seed: int) -> dict[str, Any]:
        """``group`` replies to each prompt, sampled from the policy: the sequences (left-padded
        prompt, reply), their masks and the replies' text."""
        ids, mask = left_pad([p.ids for p in prompts], self.pad_id)
        was_training = self.policy.training
        self.policy.eval()
        try:
            out = self.policy.generate(ids, mask, do_sample=True, temperature=self.sampling.temperature, top_k=0,
                                       top_p=1.0, max_new_tokens=self.sampling.max_new_tokens,
                                       num_return_sequences=group, seed=seed, eos_token_id=self.eos or None,
                                       pad_token_id=self.pad_id)
        finally:
            runtime.uninstall(self.policy)  # the kernels' weight copies would not follow the updates
            self.policy.train(was_training)
        out = out.clone()  # generate() decodes in inference mode, whose tensors autograd refuses
        start = ids.shape[1]
        replies = out[:, start:]
        rmask = reply_mask(replies, self.eos)
        texts = [self.tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True) for r, m in zip(replies, rmask)]
        return {"input_ids": out, "attention_mask": torch.cat([mask.repeat_interleave(group, 0), rmask], 1),
                "reply_mask": rmask, "prompt_length": start, "texts": texts}

    def score(self, prompts: list[Prompt], texts: list[str], group: int) -> torch.Tensor:
        columns = {k: [p.columns.get(k) for p in prompts for _ in range(group)]
                   for k in {k for p in prompts for k in p.columns}}
        plain = [p.text for p in prompts for _ in range(group)]
        return torch.tensor(self.reward(plain, texts, columns), dtype=torch.float32)

    # -- batches ----------------------------------------------------------------------------

    def next_batch(self, batch_size: int, ctx: Context) -> dict[str, Any]:
        if self.rollout is None or self.uses >= self.updates:
            index = rank_slice(self.sampler.draw(batch_size * ctx.world), ctx.rank, ctx.world)
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
            try:
                self.rollout = self._rollout([self.prompts[i] for i in index], seed)
            except RewardFailed as e:
                self.rollout = None
                return {"skip": str(e)}
            self.uses = 0
        self.uses += 1
        return dict(self.rollout)

    @torch.no_grad()
    def _rollout(self, prompts: list[Prompt], seed: int) -> dict[str, Any]:
        g = self.sampling.group
        batch = self.sample(prompts, g, seed)
        rewards = self.score(prompts, batch.pop("texts"), g)
        mask = batch["reply_mask"].float()
        was_training = self.module.training
        self.module.eval()
        if self.method == "ppo":
            old, values = reply_logps(self.module, batch, value=True)
        else:
            old = reply_logps(self.module, batch)
        self.module.train(was_training)
        ref = reply_logps(self.reference, batch)
        batch.update(old_logps=old, ref_logps=ref, rewards=rewards)
        if self.method == "grpo":
            batch["advantages"] = A.group_advantages(rewards, g, "grpo")
        elif self.method == "rloo":
            penalised = rewards - self.beta * ((old - ref) * mask).sum(1)
            batch["advantages"] = A.group_advantages(penalised, g, "rloo")
        else:
            batch.update(self.ppo_targets(rewards, old, ref, values, mask))
        n = len(rewards)
        batch["counts"] = {name: n for name in self.weights}
        return batch

    def ppo_targets(self, rewards, old, ref, values, mask) -> dict[str, torch.Tensor]:
        """Per-token rewards (the KL penalty, plus the reward at each reply's last token), and
        their GAE advantages (whitened) and returns."""
        token_rewards = -self.beta * (old - ref) * mask
        last = (mask.sum(1).long() - 1).clamp(min=0)
        token_rewards[torch.arange(len(rewards)), last] += rewards
        advantages, returns = A.gae(token_rewards, values, mask, self.gamma, self.lam)
        return {"advantages": A.whiten(advantages, mask), "returns": returns, "old_values": values * mask}

    def loss_terms(self, module, batch):
        mask = batch["reply_mask"].float()
        if self.method == "ppo":
            logps, values = reply_logps(module, batch, value=True)
        else:
            logps = reply_logps(module, batch)
        kl = A.kl_estimate(logps, batch["ref_logps"])
        adv = batch["advantages"]
        policy = A.clipped_policy_loss(logps, batch["old_logps"], adv if adv.dim() == 2 else adv[:, None], self.clip)
        terms = {"reward": batch["rewards"].sum(), "kl": A.masked_mean(kl.detach(), mask, 1).sum()}
        if self.method == "grpo":
            terms["loss"] = A.masked_mean(policy + self.beta * kl, mask, 1).sum()
        elif self.method == "rloo":
            terms["loss"] = (policy * mask).sum()
        else:
            terms["loss"] = A.masked_mean(policy, mask, 1).sum()
            value_loss = A.clipped_value_loss(values, batch["old_values"], batch["returns"], self.clip)
            terms["value_loss"] = A.masked_mean(value_loss, mask, 1).sum()
        return terms

    def tokens(self, batch):
        return int(batch["attention_mask"].sum())

    # -- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def measure(self, prompts: list[Prompt], seed: int = 0) -> dict[str, float]:
        """The mean reward of one sampled reply to each prompt and the policy's KL to the
        reference on those replies (per token)."""
        batch = self.sample(prompts, 1, seed)
        rewards = self.score(prompts, batch.pop("texts"), 1)
        logps = reply_logps(self.policy, batch)
        kl = A.masked_mean(A.kl_estimate(logps, reply_logps(self.reference, batch)), batch["reply_mask"], 1)
        return {"reward": float(rewards.mean()), "kl": float(kl.mean())}

    def evaluate(self, module, ctx):
        if not self.dev:
            return {}
        try:
            return self.measure(self.dev)
        except RewardFailed:
            return {}

    # -- checkpoints ------------------------------------------------------------------------

    def save(self, module, folder: Path) -> None:
        from ...save import save_model

        policy = module.policy if isinstance(module, PolicyWithValue) else module
        save_model(policy, folder, self.tokenizer_dir)
        if isinstance(module, PolicyWithValue):
            torch.save(module.value.state_dict(), folder / VALUE_FILE)

    def load(self, folder: Path) -> None:
        load_weights(self.policy, folder)
        if isinstance(self.module, PolicyWithValue):
            self.module.value.load_state_dict(torch.load(folder / VALUE_FILE, weights_only=True))

    def signature(self):
        from .base import model_signature

        return {"head": "causal-lm", **model_signature(self.policy), "method": self.method,
                "group": self.sampling.group}

    def state_dict(self):
        return {**super().state_dict(), "rollout": self.rollout, "uses": self.uses}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.rollout, self.uses = state.get("rollout"), state.get("uses", 0)


__all__ = ["OnlineTask", "PolicyWithValue", "RewardFailed", "RewardFunction", "RewardModel", "Sampling",
           "load_reward", "reply_mask"]
