"""Big Bird's block-sparse attention (Zaheer et al., 2020), as an attention bias over blocks.

The sequence is cut into blocks of ``block_size`` tokens. The first and last query blocks are
global: they attend to every key. Every other query block attends to the first and last key
blocks (global), to its own block and its two neighbours (the sliding window) and to
``num_random_blocks`` random blocks; the second and second-to-last query blocks take the first
three or last three blocks as their window. Attention thus grows linearly with the length.

The blocks a query block reads are given here as a count per key block: a key block read twice
(a random block that is also global) weighs twice in the softmax, which is a bias of log 2 on
its scores. That reproduces the reference's gathered-block arithmetic with one dense attention
call; a long-sequence kernel would gather the blocks instead, with the same counts.

transformers 4.57.6 draws no random blocks outside training (every random block is block 0);
so does this module, so that an evaluated model gives the reference's numbers. In training,
each head of each layer draws its own random blocks anew at every step (``draw_random_blocks``),
from the blocks that are neither global nor in the window, as the paper does; the reference
draws them with numpy's generator seeded by the layer, so training steps are not comparable
number for number.
"""

from __future__ import annotations

import math

import torch

# transformers' penalty for a masked key inside the sparse pattern (0 weight in float32).
MASKED = -10000.0


def applies(seq_len: int, block_size: int, num_random_blocks: int) -> bool:
    """Whether a sequence is long enough for the sparse pattern: longer than the global, window
    and random blocks together (with a margin), as transformers decides; shorter ones get full
    attention."""
    return seq_len > (5 + 2 * num_random_blocks) * block_size


def padding_to_blocks(seq_len: int, block_size: int) -> int:
    return (block_size - seq_len % block_size) % block_size


def block_counts(num_blocks: int, num_random_blocks: int, random_blocks: torch.Tensor | None = None) -> torch.Tensor:
    """(heads or 1, query blocks, key blocks): how many times each query block reads each key
    block. ``random_blocks`` (heads, num_blocks - 2, r) are the random key blocks of query
    blocks 1 to n - 2; None: block 0, as the reference has them outside training."""
    n, r = num_blocks, num_random_blocks
    if random_blocks is None:
        random_blocks = torch.zeros(1, n - 2, r, dtype=torch.long)
    heads = random_blocks.shape[0]
    counts = torch.zeros(heads, n, n)
    counts[:, 0] = counts[:, n - 1] = 1  # global queries
    windows = {1: (0, 1, 2), n - 2: (n - 3, n - 2, n - 1)}
    for q in range(1, n - 1):
        keys = windows.get(q, (q - 1, q, q + 1))
        for k in sorted({0, n - 1, *keys}):
            counts[:, q, k] += 1
        counts[:, q].scatter_add_(1, random_blocks[:, q - 1], torch.ones(heads, r))
    return counts


def draw_random_blocks(num_blocks: int, num_random_blocks: int, heads: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """(heads, num_blocks - 2, r) random key blocks for query blocks 1 to n - 2: distinct, and
    neither the global blocks nor the query's window (repeated only when too few remain)."""
    n, r = num_blocks, num_random_blocks
    out = torch.zeros(heads, n - 2, r, dtype=torch.long)
    for q in range(1, n - 1):
        window = {1: {1, 2}, n - 2: {n - 3, n - 2}}.get(q, {q - 1, q, q + 1})
        candidates = torch.tensor([k for k in range(1, n - 1) if k not in window] or [0])
        for h in range(heads):
            order = candidates[torch.randperm(len(candidates), generator=generator)]
            out[h, q - 1] = order.repeat((r + len(order) - 1) // len(order))[:r]
    return out


def block_sparse_bias(attention_mask: torch.Tensor, block_size: int, num_random_blocks: int,
                      dtype: torch.dtype, random_blocks: torch.Tensor | None = None) -> torch.Tensor:
    """The additive attention bias (batch, heads or 1, t, t) of the sparse pattern over a
    (batch, t) padding mask whose length is a multiple of ``block_size``: log of each key's
    count where it is read, -inf where not, and ``MASKED`` on padded keys."""
    b, t = attention_mask.shape
    counts = block_counts(t // block_size, num_random_blocks, random_blocks)
    counts = counts.repeat_interleave(block_size, 1).repeat_interleave(block_size, 2)  # (h, t, t)
    bias = torch.where(counts > 0, counts.clamp(min=1).log(), torch.tensor(-math.inf))
    keys = attention_mask[:, None, None, :].to(torch.bool)
    return (bias[None] + torch.where(keys, 0.0, MASKED)).to(dtype)


__all__ = ["MASKED", "applies", "block_counts", "block_sparse_bias", "draw_random_blocks", "padding_to_blocks"]
