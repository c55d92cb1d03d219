"""The blocks every skeleton is built from: norms, activations, the MLP and the layer that
puts attention (``lmatlas.attention``) and the MLP together.

Each quirk of a paper is a switch read from ``ModelConfig`` (``lmatlas.config``); no block
knows which model it belongs to.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CrossAttention, SelfAttention
from .cache import LayerCache
from .config import ModelConfig
from .errors import LmatlasError


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
        raise LmatlasError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}") from None


class RMSNorm(nn.Module):
    """Root-mean-square norm without centring or bias (T5, Llama)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:
            # The same formula in one operator (a decoding step calls a norm twice per layer).
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        # Computed in float32 whatever the weights' dtype, as the reference implementations do.
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)


def on_meta() -> bool:
    """Whether modules are being built on the meta device: the skeleton a checkpoint fills
    (``lmatlas.load``), which is not initialised. PyTorch draws random numbers into a meta tensor
    (``normal_``, ``randn``) through ``torch._refs``, which imports TorchDynamo and Inductor: about
    0.75 s and 75 MB at a process's first load, for values nobody reads."""
    return torch.get_default_device().type == "meta"


def embedding(num: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """``nn.Embedding(num, dim, padding_idx)``, left uninitialised on the meta device."""
    if on_meta():
        return nn.Embedding(num, dim, padding_idx, _weight=torch.empty(num, dim))
    return nn.Embedding(num, dim, padding_idx)


def random_parameter(*shape: int, std: float) -> nn.Parameter:
    """``torch.randn(*shape) * std`` as a parameter, left empty on the meta device."""
    return nn.Parameter(torch.empty(*shape) if on_meta() else torch.randn(*shape) * std)


def make_norm(cfg: ModelConfig, dim: int, eps: float | None = None) -> nn.Module:
    eps = cfg.norm_eps if eps is None else eps
    if cfg.norm == "rmsnorm":
        return RMSNorm(dim, eps)
    return nn.LayerNorm(dim, eps=eps, elementwise_affine=cfg.norm_affine)


class MLP(nn.Module):
    """The position-wise feed-forward layer; gated (SwiGLU, GEGLU) when ``cfg.gated_mlp``.

    The hook ``gated_step(x, gate, up, act)``, empty here, takes the gated half ``act(gate(x)) *
    up(x)`` where a runtime installs a kernel for it (``lmatlas.runtime``); it returns None where
    it does not apply.
    """

    gated_step: Callable[..., torch.Tensor | None] | None = None

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.gate = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias) if cfg.gated_mlp else None
        self.fc_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)
        self.act = activation(cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            if self.gated_step is not None:
                h = self.gated_step(x, self.gate, self.fc_in, self.act)
                if h is not None:
                    return self.fc_out(h)
            return self.fc_out(self.act(self.gate(x)) * self.fc_in(x))
        return self.fc_out(self.act(self.fc_in(x)))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class Layer(nn.Module):
    """One transformer layer: attention then MLP, each with a residual and a norm.

    The hook ``add_norm(x, y, norm)``, empty here, takes a post-norm residual ``norm(x + y)``
    where a runtime installs a kernel for it (``lmatlas.runtime``); the hook ``step(layer, x,
    rope, cache)`` takes a whole decoding step of one token without a mask. Each returns None
    where it does not apply.
    """

    add_norm: Callable[..., torch.Tensor | None] | None = None
    step: Callable[..., torch.Tensor | None] | None = None

    def __init__(self, cfg: ModelConfig, layer_idx: int = 0):
        super().__init__()
        self.norm_position = cfg.norm_position
        self.residual_from_norm = cfg.residual_from_norm
        self.attn = SelfAttention(cfg, layer_idx)
        self.attn_norm = make_norm(cfg, cfg.hidden_size)
        # An encoder-decoder's decoder layer attends to the source between its two sublayers.
        self.cross_attn = CrossAttention(cfg, layer_idx) if cfg.cross_attention else None
        self.cross_norm = make_norm(cfg, cfg.hidden_size) if cfg.cross_attention else None
        if cfg.sparse_layer(layer_idx):
            from .moe import SparseMLP

            self.mlp: nn.Module = SparseMLP(cfg)
        else:
            self.mlp = MLP(cfg)
        # The parallel layout reads one norm for both branches (GPT-J, Falcon-7B) or one each
        # (Falcon-40B's new decoder architecture).
        one_norm = cfg.norm_position == "parallel" and cfg.parallel_norms == 1
        self.mlp_norm = None if one_norm else make_norm(cfg, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: LayerCache | None = None,
        is_causal: bool = False,
        memory: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (batch, t, hidden) -> (batch, t, hidden); in the three layouts (``norm_position``)

            post (Transformer, BERT)    pre (GPT-2, Llama)          parallel (GPT-J, Falcon)
            x ─┬─ attn ─(+)─ norm ─┐    x ─┬─ norm ─ attn ─(+)─┐    x ─┬─ norm ─┬─ attn ──┐
               └────────┘          │       └────────────────┘  │       │        └─ mlp ─(+)
            ┌──────────────────────┘    ┌──────────────────────┘       └───────────────(+)─ out
            x ─┬─ mlp ─(+)─ norm ─ out  x ─┬─ norm ─ mlp ─(+)─ out
               └───────┘                   └───────────────┘

        A decoder with cross-attention (encoder-decoders) has a third sublayer, laid out like the
        other two, between them.
        """
        if self.step is not None and cache is not None and mask is None and memory is None and not self.training:
            y = self.step(self, x, rope, cache)
            if y is not None:
                return y
        # Dropout is the identity in eval mode: skipping the module call saves a call per sublayer
        # in every decoding step.
        drop = self.dropout if self.training else _identity
        if self.norm_position == "post":
            x = self._add_norm(self.attn_norm, x, drop(self.attn(x, mask, rope, cache, is_causal)))
            if self.cross_attn is not None:
                x = self._add_norm(self.cross_norm, x, drop(self.cross_attn(x, memory_mask, memory)))
            return self._add_norm(self.mlp_norm, x, drop(self.mlp(x)))
        if self.norm_position == "pre":
            h = self.attn_norm(x)
            x = (h if self.residual_from_norm else x) + drop(self.attn(h, mask, rope, cache, is_causal))
            if self.cross_attn is not None:
                x = x + drop(self.cross_attn(self.cross_norm(x), memory_mask, memory))
            h = self.mlp_norm(x)
            return (h if self.residual_from_norm else x) + drop(self.mlp(h))
        h = self.attn_norm(x)
        a = drop(self.attn(h, mask, rope, cache, is_causal))
        m = drop(self.mlp(h if self.mlp_norm is None else self.mlp_norm(x)))
        return x + (m + a)

    def _add_norm(self, norm: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``norm(x + y)``, a post-norm residual."""
        if self.add_norm is not None and type(norm) is nn.LayerNorm:
            out = self.add_norm(x, y, norm)
            if out is not None:
                return out
        return norm(x + y)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT/GPT-2 initialisation: normal(0, 0.02) weights, zero biases, unit norms. Modules on
    the meta device are left alone (see ``on_meta``)."""
    for m in module.modules():
        if any(p.is_meta for p in m.parameters(recurse=False)):
            continue
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, (nn.LayerNorm, RMSNorm)) and getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


__all__ = ["ACTIVATIONS", "Layer", "MLP", "RMSNorm", "activation", "embedding", "init_weights", "make_norm", "on_meta",
           "random_parameter"]
