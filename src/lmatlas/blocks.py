"""The blocks every skeleton is built from: norms, activations, attention, MLP, a layer.

Each quirk of a paper is a switch read from ``ModelConfig`` (``lmatlas.config``); no block
knows which model it belongs to.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    # GPT's and Google BERT's tanh approximation of GELU ("gelu_new" in checkpoints).
    return F.gelu(x, approximate="tanh")


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # the exact, erf-based GELU
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}") from None


class RMSNorm(nn.Module):
    """Root-mean-square norm without centring or bias (T5, Llama)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in float32 whatever the weights' dtype, as the reference implementations do.
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)


def make_norm(cfg: ModelConfig, dim: int) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(dim, cfg.norm_eps)
    return nn.LayerNorm(dim, eps=cfg.norm_eps)


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(batch, keys) 1/0 mask -> boolean (batch, 1, 1, keys) for SDPA, or None without padding.

    Skipping the mask when nothing is padded lets SDPA take its fastest kernel.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


class Attention(nn.Module):
    """Multi-head scaled dot-product attention with one fused q/k/v projection.

    Fusing the three projections is one matmul instead of three; the weight maps concatenate
    the checkpoint's separate query, key and value weights into it.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        q_dim = cfg.num_heads * cfg.head_dim
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.split = (q_dim, kv_dim, kv_dim)
        self.qkv = nn.Linear(cfg.hidden_size, q_dim + 2 * kv_dim, bias=cfg.attention_bias)
        self.out = nn.Linear(q_dim, cfg.hidden_size, bias=cfg.attention_bias)
        self.dropout = cfg.attention_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(self.split, dim=-1)
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    """The position-wise feed-forward layer; gated (SwiGLU, GEGLU) when ``cfg.gated_mlp``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.gate = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias) if cfg.gated_mlp else None
        self.fc_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)
        self.act = activation(cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            return self.fc_out(self.act(self.gate(x)) * self.fc_in(x))
        return self.fc_out(self.act(self.fc_in(x)))


class Layer(nn.Module):
    """One transformer layer: attention then MLP, each with a residual and a norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm_position = cfg.norm_position
        self.attn = Attention(cfg)
        self.attn_norm = make_norm(cfg, cfg.hidden_size)
        self.mlp = MLP(cfg)
        # The parallel layout (GPT-J, Falcon) reads one norm for both branches.
        self.mlp_norm = None if cfg.norm_position == "parallel" else make_norm(cfg, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.norm_position == "post":
            x = self.attn_norm(x + self.dropout(self.attn(x, mask)))
            return self.mlp_norm(x + self.dropout(self.mlp(x)))
        if self.norm_position == "pre":
            x = x + self.dropout(self.attn(self.attn_norm(x), mask))
            return x + self.dropout(self.mlp(self.mlp_norm(x)))
        h = self.attn_norm(x)
        return x + self.dropout(self.attn(h, mask)) + self.dropout(self.mlp(h))


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """The Transformer's fixed position encodings: sin on even, cos on odd dimensions."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    freq = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table.float()


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT/GPT-2 initialisation: normal(0, 0.02) weights, zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


__all__ = [
    "ACTIVATIONS",
    "Attention",
    "Layer",
    "MLP",
    "RMSNorm",
    "activation",
    "init_weights",
    "make_norm",
    "padding_mask",
    "sinusoidal_table",
]
