"""Where a token sits: the position schemes of the papers, computed rather than stored.

Sinusoidal encodings (the Transformer; CTRL, Marian, Pegasus), rotary embeddings (RoFormer;
GPT-NeoX, Falcon, Llama), ALiBi's per-head slopes (BLOOM, Falcon-RW) and T5's relative position
buckets. Learned position tables are plain embeddings (``embedding_layer.Embeddings``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig, rope_type


def rotary_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """RoFormer's frequencies base^(-2i/d) over the rotated dimensions, with Llama 3's or linear
    scaling of the long wavelengths when the checkpoint asks for it (float32, as trained)."""
    dim = cfg.rotary_dim
    inv_freq = 1.0 / (cfg.rotary_base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = cfg.rope_scaling or {}
    kind = rope_type(scaling)
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
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


__all__ = [
    "alibi_slopes", "apply_rotary", "relative_position_bias", "relative_position_bucket", "rotary_cos_sin",
    "rotary_inv_freq", "sinusoidal_positions",
]  # fmt: skip
