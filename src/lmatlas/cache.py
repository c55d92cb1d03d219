"""What decoding keeps between steps: the keys and values of the tokens seen so far.

A decoder's ``KVCache`` holds every layer's keys and values in one tensor allocated for the whole
generation; each layer reads and writes its own slice through a ``LayerCache`` view. An
encoder-decoder's ``Seq2SeqCache`` adds the source's cross-attention keys and values, projected
once per source.
"""

from __future__ import annotations

import torch

from .config import ModelConfig


class LayerCache:
    """One layer's view of a ``KVCache``: keys and values, (batch, kv_heads, max_length,
    head_dim) each, filled up to ``start`` before this forward pass."""

    __slots__ = ("keys", "values", "start")

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, start: int):
        self.keys, self.values, self.start = keys, values, start

    def append(self, k: torch.Tensor, v: torch.Tensor) -> int:
        """Write the new tokens' keys and values, (batch, kv_heads, t, head_dim), after the
        cached ones, in place; returns the filled length."""
        end = self.start + k.shape[2]
        self.keys[:, :, self.start : end] = k
        self.values[:, :, self.start : end] = v
        return end


class KVCache:
    """Keys and values of every layer, allocated once for the whole generation.

    One tensor of shape (2, layers, batch, kv_heads, max_length, head_dim); a forward pass writes
    its new keys and values at ``length`` in place, so a token costs no reallocation or copy of
    the past. Multi-query and grouped-query models store only their key/value heads.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        batch_size: int,
        max_length: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        self.max_length = max_length
        self.length = 0
        self.data = torch.empty(
            2, cfg.num_layers, batch_size, cfg.num_kv_heads, max_length, cfg.head_dim, dtype=dtype, device=device
        )

    @property
    def batch_size(self) -> int:
        return self.data.shape[2]

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self.data[0, i], self.data[1, i], self.length)

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row r of the batch continues from row ``index[r]`` (filled part only)."""
        n = self.length
        if n == 0:
            return
        # Only the rows whose beam changed parent are written, each by one strided copy over
        # every layer's keys and values (a gather of the whole batch along this non-outer axis
        # is several times slower). A parent that is itself overwritten is copied aside first.
        filled = self.data[:, :, :, :, :n]
        moves = [(row, parent) for row, parent in enumerate(index.tolist()) if row != parent]
        if not moves:
            return
        overwritten = {row for row, _ in moves}
        saved = {p: filled[:, :, p].clone() for p in {p for _, p in moves} & overwritten}
        for row, parent in moves:
            filled[:, :, row].copy_(saved[parent] if parent in saved else filled[:, :, parent])

    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


class Seq2SeqCache:
    """The decoder's key/value cache, plus the source's cross-attention keys and values.

    The cross-attention keys and values are computed once per source row. When several decoder
    rows continue one source (beams, or several samples), they are consecutive and share that
    source's keys and values (see ``attention.CrossAttention``): beam search reorders only
    the self-attention cache. ``self_attention`` is None when decoding without a cache (each step
    re-reads the whole target), while the source is still encoded only once.
    """

    def __init__(
        self,
        self_attention: KVCache | None,
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        memory_mask: torch.Tensor | None,
        encoder_last_hidden_state: torch.Tensor,
    ):
        self.self_attention = self_attention
        self.cross = cross
        self.memory_mask = memory_mask
        self.encoder_last_hidden_state = encoder_last_hidden_state

    @property
    def length(self) -> int:
        return 0 if self.self_attention is None else self.self_attention.length

    @property
    def max_length(self) -> int:
        return 0 if self.self_attention is None else self.self_attention.max_length

    @property
    def batch_size(self) -> int:
        return 0 if self.self_attention is None else self.self_attention.batch_size

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: only the self-attention cache follows the beams (the source's keys and
        values are the same for every beam of it)."""
        if self.self_attention is not None:
            self.self_attention.reorder(index)

    def nbytes(self) -> int:
        own = 0 if self.self_attention is None else self.self_attention.nbytes()
        return own + sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.cross)


__all__ = ["KVCache", "LayerCache", "Seq2SeqCache"]
