"""A mixture of experts in place of the MLP: Switch Transformer's top-1 routing (Fedus et al.,
2021), and its two auxiliary losses.

Each token goes to the one expert its router scores highest, and the expert's output is
scaled by that probability. An expert takes at most ``expert_capacity`` tokens of a sequence,
first come first served; the others skip the MLP (their residual passes on unchanged), which
is what "dropped tokens" means in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import MLP
from .config import ModelConfig


class SparseMLP(nn.Module):
    """``num_experts`` MLPs and a linear router. After each forward, ``routing`` holds the
    router's logits (batch, t, experts), each token's expert (0 for a dropped token, as
    transformers reports it) and whether it was kept, for the losses below."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.router = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=cfg.router_bias)
        self.experts = nn.ModuleList(MLP(cfg) for _ in range(cfg.num_experts))
        self.capacity = cfg.expert_capacity
        self.jitter = cfg.router_jitter_noise
        self.routing: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The router runs in float32 whatever the model's dtype: the paper's selective precision.
        h = x.float()
        if self.training and self.jitter > 0:
            h = h * torch.empty_like(h).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        logits = nn.functional.linear(h, self.router.weight.float(),
                                      None if self.router.bias is None else self.router.bias.float())
        probs = logits.softmax(-1)
        top, expert = probs.max(-1)
        chosen = nn.functional.one_hot(expert, self.router.out_features)
        # A token's place in its expert's queue, counted along the sequence.
        kept = chosen * (chosen.cumsum(-2) <= self.capacity)
        routed = kept.argmax(-1)
        out = torch.zeros_like(x)
        for e in kept.flatten(0, 1).any(0).nonzero().flatten().tolist():
            rows = kept[..., e].bool()
            out[rows] = self.experts[e](x[rows])
        self.routing = (logits, routed, kept.any(-1))
        return top.unsqueeze(-1).to(x.dtype) * out


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's z-loss: the mean squared log-partition of the router logits (keeps them small)."""
    return torch.logsumexp(logits, -1).pow(2).mean()


def load_balancing_loss(logits: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's auxiliary loss (eq. 4-6): ``E^2`` times the mean over experts of the
    fraction of tokens sent to each and the mean router probability it gets, per sequence;
    1 when the load is even."""
    n = logits.shape[-1]
    fraction = nn.functional.one_hot(expert, n).float().mean(-2)
    probability = logits.softmax(-1).mean(-2)
    return (fraction * probability).mean() * n**2


def sparse_stacks(model: nn.Module) -> list[list[SparseMLP]]:
    """The mixture-of-experts layers of ``model``, by stack (encoder, decoder)."""
    backbone = getattr(model, "backbone", model)
    parts = [getattr(backbone, n) for n in ("encoder", "decoder") if hasattr(backbone, n)] or [backbone]
    return [[m for m in part.modules() if isinstance(m, SparseMLP)] for part in parts]


def router_losses(stacks: list[list[SparseMLP]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(z-loss, load-balancing loss) summed over ``stacks`` (the encoder's and the decoder's
    sparse layers), each stack's layers taken together as transformers does: their tokens side
    by side in one sequence."""
    z = aux = torch.zeros(())
    for layers in stacks:
        routed = [m.routing for m in layers if m.routing is not None]
        if not routed:
            continue
        logits = torch.cat([r[0] for r in routed], 1)
        expert = torch.cat([r[1] for r in routed], 1)
        z = z + router_z_loss(logits)
        aux = aux + load_balancing_loss(logits, expert)
    return z, aux


__all__ = ["SparseMLP", "load_balancing_loss", "router_losses", "router_z_loss", "sparse_stacks"]
