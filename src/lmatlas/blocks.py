"""The blocks every skeleton is built from: norms, activations, attention, MLP, a layer.

Each quirk of a paper is a switch read from ``ModelConfig`` (``lmatlas.config``); no block
knows which model it belongs to.
"""

from __future__ import annotations

import math
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


def make_norm(cfg: ModelConfig, dim: int, eps: float | None = None) -> nn.Module:
    eps = cfg.norm_eps if eps is None else eps
    if cfg.norm == "rmsnorm":
        return RMSNorm(dim, eps)
    return nn.LayerNorm(dim, eps=eps, elementwise_affine=cfg.norm_affine)


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(batch, keys) 1/0 mask -> boolean (batch, 1, 1, keys) for SDPA, or None without padding.

    Skipping the mask when nothing is padded lets SDPA take its fastest kernel.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


def rotary_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """RoFormer's frequencies base^(-2i/d) over the rotated dimensions, with Llama 3's or linear
    scaling of the long wavelengths when the checkpoint asks for it (float32, as trained)."""
    dim = cfg.rotary_dim
    inv_freq = 1.0 / (cfg.rotary_base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = cfg.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif rope_type == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        context = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        # Long wavelengths (beyond the trained context) slow down by `factor`, short ones keep
        # their speed, and the band between is interpolated.
        scaled = torch.where(wavelen > context / low, inv_freq / factor, inv_freq)
        smooth = (context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < context / high) * ~(wavelen > context / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


def rotary_cos_sin(
    inv_freq: torch.Tensor, position_ids: torch.Tensor, interleaved: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position x frequency, shaped (batch, 1, tokens, rotary_dim) for the heads."""
    angles = position_ids[:, None, :, None].float() * inv_freq.to(position_ids.device)
    if interleaved:
        angles = angles.repeat_interleave(2, dim=-1)
    else:
        angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate each pair of dimensions by its angle; dimensions past ``cos``'s width pass through."""
    rot = cos.shape[-1]
    x_rot, x_pass = (x, None) if rot == x.shape[-1] else (x[..., :rot], x[..., rot:])
    if interleaved:  # GPT-J pairs neighbours (2i, 2i + 1)
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
        rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)
    else:  # GPT-NeoX, Falcon and Llama pair i with i + d/2 ("rotate half")
        x1, x2 = x_rot.chunk(2, dim=-1)
        rotated = torch.cat((-x2, x1), dim=-1)
    out = x_rot * cos + rotated * sin
    return out if x_pass is None else torch.cat((out, x_pass), dim=-1)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes: a geometric sequence starting at 2^(-8/n) for the largest power
    of two n <= heads; the remaining heads take every other slope of the sequence for 2n."""
    closest = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        remaining = min(closest, num_heads - closest)
        slopes = torch.cat([slopes, torch.pow(extra_base, torch.arange(1, 1 + 2 * remaining, 2, dtype=torch.int32))])
    return slopes


# Query rows per source up to which cross-attention takes a runtime's kernel (``attend_few``), or
# two batched matmuls, instead of SDPA.
FEW_QUERIES = 16


def _few_queries_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """Softmax attention of a few query rows (a decoding step's beams) over a whole source, with
    PyTorch's operators (a runtime's ``attend_few`` kernel is the faster path).

    Each step reads every layer's source keys and values from memory, cold (the weights have
    streamed through the caches since the last step). There, MKL's batched products take about
    20% less time than SDPA's blocked kernel, whose per-block work is for long query runs.
    ``mask``: boolean, True where a key may be attended, as SDPA takes it. Masked scores take the
    dtype's lowest value, not -inf, so that a source that is all padding averages its values
    (as transformers' additive masks do) instead of turning into NaN.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)
    if mask is not None:
        scores = scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class Attention(nn.Module):
    """Multi-head scaled dot-product attention with one fused q/k/v projection.

    Fusing the three projections is one matmul instead of three; the weight maps concatenate
    the checkpoint's separate query, key and value weights into it. Grouped-query and
    multi-query attention (fewer key/value heads) share each key/value head among a group of
    query heads. With a key/value cache, the new keys and values are written into the cache in
    place and attention reads the filled part of it.

    Two hooks, empty here, take a decoding step's attention where a runtime installs a kernel
    for it (``lmatlas.runtime``); each returns None where it does not apply:
    ``decode_step(q, k_cache, v_cache, length, mask, scale)``, one new query per row over the
    cache, and ``attend_few(q, k, v, mask, scale, heads)``, a few query rows per source over an
    encoder-decoder's source.
    """

    decode_step: Callable[..., torch.Tensor | None] | None = None
    attend_few: Callable[..., torch.Tensor | None] | None = None

    def __init__(self, cfg: ModelConfig, layer_idx: int = 0, cross: bool = False):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        q_dim = cfg.num_heads * cfg.head_dim
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.split = (q_dim, kv_dim, kv_dim)
        if cross:
            # Cross-attention (encoder-decoders): queries from the decoder, keys and values from
            # the encoder's output, projected once per source (``memory_kv``).
            self.q = nn.Linear(cfg.hidden_size, q_dim, bias=cfg.qkv_bias)
            self.kv = nn.Linear(cfg.hidden_size, 2 * kv_dim, bias=cfg.qkv_bias)
        else:
            self.qkv = nn.Linear(cfg.hidden_size, q_dim + 2 * kv_dim, bias=cfg.qkv_bias)
        self.out = nn.Linear(q_dim, cfg.hidden_size, bias=cfg.attention_bias)
        self.dropout = cfg.attention_dropout
        scale = cfg.attention_scale if cfg.attention_scale is not None else cfg.head_dim**-0.5
        if cfg.attention_scale_by_inverse_layer:
            scale /= float(layer_idx + 1)
        self.scale = scale
        self.rotary_interleaved = cfg.rotary_interleaved
        self.gqa = self.num_kv_heads != self.num_heads

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv: tuple[torch.Tensor, torch.Tensor, int] | None = None,
        is_causal: bool = False,
        memory: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if memory is not None:
            return self.attend_memory(x, mask, memory)
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(self.split, dim=-1)
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q = apply_rotary(q, rope[0], rope[1], self.rotary_interleaved)
            k = apply_rotary(k, rope[0], rope[1], self.rotary_interleaved)
        if kv is not None:
            k_cache, v_cache, start = kv
            end = start + t
            k_cache[:, :, start:end] = k
            v_cache[:, :, start:end] = v
            if t == 1 and not self.training and self.decode_step is not None:
                y = self.decode_step(q, k_cache, v_cache, end, mask, self.scale)  # (b, 1, heads x head_dim)
                if y is not None:
                    return self.out(y)
            k, v = k_cache[:, :, :end], v_cache[:, :, :end]
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
            scale=self.scale,
            enable_gqa=self.gqa,
        )
        return self.out(y.transpose(1, 2).reshape(b, t, -1))

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the encoder's output, (batch, kv_heads, source, head_dim) each."""
        b, s, _ = memory.shape
        k, v = self.kv(memory).split(self.split[1:], dim=-1)
        k = k.view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return k, v

    def attend_memory(
        self, x: torch.Tensor, mask: torch.Tensor | None, memory: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Cross-attention over ``memory_kv`` keys and values.

        The keys and values may hold fewer rows than ``x``: each source row then serves a group
        of consecutive decoder rows (the beams or samples of one source), whose queries are
        folded into the query axis, so the source's keys and values are read once, not once per
        beam, and never copied or reordered.
        """
        b, t, _ = x.shape
        k, v = memory
        sources = k.shape[0]
        group = b // sources
        few = not (self.training or self.gqa) and group * t <= FEW_QUERIES
        q = self.q(x)
        if few and self.attend_few is not None:
            y = self.attend_few(q, k, v, mask, self.scale, self.num_heads)  # (b, t, heads x head_dim)
            if y is not None:
                return self.out(y)
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        if group > 1:
            q = q.reshape(sources, group, self.num_heads, t, self.head_dim).transpose(1, 2)
            q = q.reshape(sources, self.num_heads, group * t, self.head_dim)
        if not few:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
                scale=self.scale,
                enable_gqa=self.gqa,
            )
        else:
            y = _few_queries_attention(q, k, v, mask, self.scale)
        # (sources, heads, group x t, head_dim) -> (batch, t, heads x head_dim) in one copy: the
        # query axis holds each source's group rows, then their t positions.
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


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class Layer(nn.Module):
    """One transformer layer: attention then MLP, each with a residual and a norm.

    The hook ``add_norm(x, y, norm)``, empty here, takes a post-norm residual ``norm(x + y)``
    where a runtime installs a kernel for it (``lmatlas.runtime``); it returns None where it
    does not apply.
    """

    add_norm: Callable[..., torch.Tensor | None] | None = None

    def __init__(self, cfg: ModelConfig, layer_idx: int = 0):
        super().__init__()
        self.norm_position = cfg.norm_position
        self.residual_from_norm = cfg.residual_from_norm
        self.attn = Attention(cfg, layer_idx)
        self.attn_norm = make_norm(cfg, cfg.hidden_size)
        # An encoder-decoder's decoder layer attends to the source between its two sublayers.
        self.cross_attn = Attention(cfg, layer_idx, cross=True) if cfg.cross_attention else None
        self.cross_norm = make_norm(cfg, cfg.hidden_size) if cfg.cross_attention else None
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
        kv: tuple[torch.Tensor, torch.Tensor, int] | None = None,
        is_causal: bool = False,
        memory: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Dropout is the identity in eval mode: skipping the module call saves a call per sublayer
        # in every decoding step.
        drop = self.dropout if self.training else _identity
        if self.norm_position == "post":
            x = self._add_norm(self.attn_norm, x, drop(self.attn(x, mask, rope, kv, is_causal)))
            if self.cross_attn is not None:
                x = self._add_norm(self.cross_norm, x, drop(self.cross_attn(x, memory_mask, memory=memory)))
            return self._add_norm(self.mlp_norm, x, drop(self.mlp(x)))
        if self.norm_position == "pre":
            h = self.attn_norm(x)
            x = (h if self.residual_from_norm else x) + drop(self.attn(h, mask, rope, kv, is_causal))
            if self.cross_attn is not None:
                x = x + drop(self.cross_attn(self.cross_norm(x), memory_mask, memory=memory))
            h = self.mlp_norm(x)
            return (h if self.residual_from_norm else x) + drop(self.mlp(h))
        h = self.attn_norm(x)
        a = drop(self.attn(h, mask, rope, kv, is_causal))
        m = drop(self.mlp(h if self.mlp_norm is None else self.mlp_norm(x)))
        return x + (m + a)

    def _add_norm(self, norm: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``norm(x + y)``, a post-norm residual."""
        if self.add_norm is not None and type(norm) is nn.LayerNorm:
            out = self.add_norm(x, y, norm)
            if out is not None:
                return out
        return norm(x + y)


def sinusoidal_positions(
    position_ids: torch.Tensor, dim: int, layout: str = "concat", float64: bool = False
) -> torch.Tensor:
    """Fixed position encodings computed for the given positions (float32), not looked up.

    ``concat``: all sines then all cosines of position / 10000^(2i/d) (CTRL, tensor2tensor).
    ``float64``: computed in double precision and rounded, as Marian's and Pegasus' tables are.
    """
    if float64:
        i = torch.arange(dim, dtype=torch.float64, device=position_ids.device)
        angles = position_ids[..., None].double() / torch.pow(10000.0, 2 * torch.div(i, 2, rounding_mode="floor") / dim)
        if layout == "concat":
            return torch.cat([torch.sin(angles[..., 0::2]), torch.cos(angles[..., 1::2])], dim=-1).float()
        out = torch.empty_like(angles)
        out[..., 0::2] = torch.sin(angles[..., 0::2])
        out[..., 1::2] = torch.cos(angles[..., 1::2])
        return out.float()
    i = torch.arange(dim, dtype=torch.int64, device=position_ids.device).float()
    rates = 1 / torch.pow(10000, (2 * torch.div(i, 2, rounding_mode="floor")) / dim)
    angles = position_ids[..., None].float() * rates
    if layout == "concat":
        return torch.cat([torch.sin(angles[..., 0::2]), torch.cos(angles[..., 1::2])], dim=-1)
    out = torch.empty_like(angles)
    out[..., 0::2] = torch.sin(angles[..., 0::2])
    out[..., 1::2] = torch.cos(angles[..., 1::2])
    return out


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """The Transformer's fixed position encodings: sin on even, cos on odd dimensions."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    freq = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table.float()


def relative_position_bucket(
    relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's bucket of each key-minus-query offset (Raffel et al., 2020, after Shaw et al.).

    Half the buckets hold exact small offsets, the other half offsets growing logarithmically
    up to ``max_distance``, beyond which all share the last bucket. Bidirectional (encoder):
    keys after the query use a separate half of the buckets; causal (decoder): only offsets into
    the past count.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    large = max_exact + (
        torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


def relative_position_bias(
    table: nn.Embedding, query_start: int, queries: int, keys: int, bidirectional: bool, max_distance: int
) -> torch.Tensor:
    """T5's learned per-head bias of every (query, key) pair: (1, heads, queries, keys)."""
    device = table.weight.device
    q = torch.arange(query_start, query_start + queries, device=device)[:, None]
    k = torch.arange(keys, device=device)[None, :]
    buckets = relative_position_bucket(k - q, bidirectional, table.num_embeddings, max_distance)
    return table(buckets).permute(2, 0, 1).unsqueeze(0)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT/GPT-2 initialisation: normal(0, 0.02) weights, zero biases, unit norms."""
    for m in module.modules():
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


__all__ = [
    "ACTIVATIONS",
    "Attention",
    "Layer",
    "MLP",
    "RMSNorm",
    "activation",
    "alibi_slopes",
    "apply_rotary",
    "init_weights",
    "make_norm",
    "padding_mask",
    "relative_position_bias",
    "relative_position_bucket",
    "rotary_cos_sin",
    "rotary_inv_freq",
    "sinusoidal_positions",
    "sinusoidal_table",
]
