"""Multi-head scaled dot-product attention: a layer's self-attention over its own tokens (with a
key/value cache when decoding), and an encoder-decoder's cross-attention over the source.

Grouped-query and multi-query attention (fewer key/value heads, Falcon and Llama) share each
key/value head among a group of query heads. Each class has one hook, empty here, which a CPU
runtime fills for a decode (``lmatlas.runtime``): a faster kernel for a decoding step that
returns None where it does not apply, and the class then takes PyTorch's path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .positions import apply_rotary

if TYPE_CHECKING:
    from .cache import LayerCache

# Query rows per source up to which cross-attention takes the ``attend_few`` hook, or two batched
# matmuls, instead of SDPA.
FEW_QUERIES = 16


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(batch, keys) 1/0 mask -> boolean (batch, 1, 1, keys) for SDPA, or None without padding.

    Skipping the mask when nothing is padded lets SDPA take its fastest kernel.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


def few_queries_attention(
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
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)  # (.., queries, keys)
    if mask is not None:
        scores = scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    return torch.matmul(torch.softmax(scores, dim=-1), v)  # (.., queries, head_dim)


class _Heads(nn.Module):
    """What both kinds share: the head layout, the score scale and the output projection."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        q_dim = cfg.num_heads * cfg.head_dim
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        # The fused projection's (q, k, v) split; the weight maps concatenate the checkpoint's
        # separate query, key and value weights along it.
        self.split = (q_dim, kv_dim, kv_dim)
        self.out = nn.Linear(q_dim, cfg.hidden_size, bias=cfg.attention_bias)
        self.dropout = cfg.attention_dropout
        scale = cfg.attention_scale if cfg.attention_scale is not None else cfg.head_dim**-0.5
        if cfg.attention_scale_by_inverse_layer:
            scale /= float(layer_idx + 1)
        self.scale = scale
        self.gqa = self.num_kv_heads != self.num_heads

    def heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n, self.head_dim).transpose(1, 2)  # (b, n, t, head_dim)

    def sdpa(self, q, k, v, mask, is_causal: bool = False) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
            scale=self.scale,
            enable_gqa=self.gqa,
        )


class SelfAttention(_Heads):
    """Attention of a layer's tokens over themselves (and, decoding, over the cached ones).

    One fused q/k/v projection: one matmul instead of three. With a cache, the new keys and
    values are written into it in place and attention reads its filled part. The hook
    ``decode_step(q, k_cache, v_cache, length, mask, scale)`` takes a step of one new token per
    row.
    """

    decode_step: Callable[..., torch.Tensor | None] | None = None

    def __init__(self, cfg: ModelConfig, layer_idx: int = 0):
        super().__init__(cfg, layer_idx)
        self.qkv = nn.Linear(cfg.hidden_size, sum(self.split), bias=cfg.qkv_bias)
        self.rotary_interleaved = cfg.rotary_interleaved

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: LayerCache | None = None, is_causal: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        b, t, _ = x.shape
        fused = self.qkv(x)
        q_dim, kv_dim, _ = self.split
        v = self.heads(fused[..., q_dim + kv_dim :], self.num_kv_heads)  # (b, kv_heads, t, head_dim)
        if rope is not None:
            # Queries and keys turn by the same angles and lie side by side in the fused output:
            # one rotation over both sets of heads (half the operators of a decoding step's rotary).
            qk = self.heads(fused[..., : q_dim + kv_dim], self.num_heads + self.num_kv_heads)
            qk = apply_rotary(qk, rope[0], rope[1], self.rotary_interleaved)
            q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]  # (b, heads | kv_heads, t, head_dim)
        else:
            q = self.heads(fused[..., :q_dim], self.num_heads)  # (b, heads, t, head_dim)
            k = self.heads(fused[..., q_dim : q_dim + kv_dim], self.num_kv_heads)  # (b, kv_heads, t, head_dim)
        if cache is not None:
            end = cache.append(k, v)
            if t == 1 and not self.training and self.decode_step is not None:
                y = self.decode_step(q, cache.keys, cache.values, end, mask, self.scale)  # (b, 1, heads x head_dim)
                if y is not None:
                    return self.out(y)
            k, v = cache.keys[:, :, :end], cache.values[:, :, :end]  # (b, kv_heads, end, head_dim)
        y = self.sdpa(q, k, v, mask, is_causal)  # (b, heads, t, head_dim)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class CrossAttention(_Heads):
    """An encoder-decoder's decoder attending to the encoder's output (the source).

    Queries come from the decoder; keys and values from the source, projected once per source
    (``memory_kv``). The keys and values may hold fewer rows than the queries: each source row
    then serves a group of consecutive decoder rows (the beams or samples of one source), whose
    queries are folded into the query axis, so the source's keys and values are read once, not
    once per beam, and never copied or reordered. The hook ``attend_few(q, k, v, mask, scale,
    heads)`` takes a decoding step's few query rows per source.
    """

    attend_few: Callable[..., torch.Tensor | None] | None = None

    def __init__(self, cfg: ModelConfig, layer_idx: int = 0):
        super().__init__(cfg, layer_idx)
        self.q = nn.Linear(cfg.hidden_size, self.split[0], bias=cfg.qkv_bias)
        self.kv = nn.Linear(cfg.hidden_size, 2 * self.split[1], bias=cfg.qkv_bias)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the encoder's output, (batch, kv_heads, source, head_dim) each."""
        k, v = self.kv(memory).split(self.split[1:], dim=-1)
        return self.heads(k, self.num_kv_heads), self.heads(v, self.num_kv_heads)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, memory: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        b, t, _ = x.shape
        k, v = memory  # (sources, kv_heads, source length, head_dim)
        sources = k.shape[0]
        group = b // sources
        few = not (self.training or self.gqa) and group * t <= FEW_QUERIES
        q = self.q(x)  # (b, t, heads x head_dim)
        if few and self.attend_few is not None:
            y = self.attend_few(q, k, v, mask, self.scale, self.num_heads)  # (b, t, heads x head_dim)
            if y is not None:
                return self.out(y)
        q = self.heads(q, self.num_heads)  # (b, heads, t, head_dim)
        if group > 1:
            q = q.reshape(sources, group, self.num_heads, t, self.head_dim).transpose(1, 2)
            q = q.reshape(sources, self.num_heads, group * t, self.head_dim)  # (sources, heads, group x t, head_dim)
        y = few_queries_attention(q, k, v, mask, self.scale) if few else self.sdpa(q, k, v, mask)
        # (sources, heads, group x t, head_dim) -> (b, t, heads x head_dim) in one copy: the
        # query axis holds each source's group rows, then their t positions.
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


__all__ = ["CrossAttention", "FEW_QUERIES", "SelfAttention", "few_queries_attention", "padding_mask"]
