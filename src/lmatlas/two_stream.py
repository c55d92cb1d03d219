"""XLNet's two-stream attention (Yang et al., 2019), with Transformer-XL's relative positions.

Permutation language modelling predicts the tokens of a sequence in a random factorisation
order: each target may read only the tokens before it in that order, and must not read itself.
A single stream cannot serve both needs (a token's state is context for later targets, so it
must hold the token; as a prediction it must not), so XLNet runs two:

- the *content* stream ``h``: each position starts from its token's embedding and attends to the
  positions ``perm_mask`` lets it see *and to itself*;
- the *query* stream ``g``: each prediction starts from one learned vector (``mask_emb``), knows
  only where its target is, and attends to the content of the positions its target may see
  (never itself). ``target_mapping`` (batch, predictions, positions) says which position each
  prediction is for; without it every position is a prediction.

Both streams share the layer's weights and read the same keys and values: the content stream's,
after the memory of earlier segments (Transformer-XL's recurrence, ``lmatlas.xlnet``).
The distances' encodings, their shift and the causal mask are Transformer-XL's
(``lmatlas.recurrence``).

Scores are Transformer-XL's, with a relative segment term: for query i and key j,

    (q_i + u)·k_j  +  (q_i + v)·R(i - j)  +  (q_i + s)·S[i and j in different segments]

where R projects a sinusoid of the distance (``r``), u, v, s are learned per head
(``r_w_bias``, ``r_r_bias``, ``r_s_bias``) and S holds two vectors per head (``seg_embed``):
segments are told apart, never numbered, so any number of them can follow each other.

Masks here are floats, 1 where a query may not read a key, as the reference builds them; a
blocked score loses 1e30 (a row with nothing to read attends evenly, as in the reference).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import make_norm, on_meta
from .config import ModelConfig
from .recurrence import blocked_keys, relative_shift


def stream_masks(qlen: int, mlen: int, batch: int, causal: bool, same_length: bool,
                 input_mask: torch.Tensor | None, perm_mask: torch.Tensor | None,
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(content stream's, query stream's) masks, (batch or 1, qlen, mlen + qlen) each, or None
    where nothing is blocked.

    ``input_mask`` (batch, qlen): 1 on padding; ``perm_mask`` (batch, qlen, qlen): 1 where i may
    not read j. The memory is readable by all. The query stream's mask is the full one; the
    content stream's lets each position read itself too."""
    # XLNet's same_length lets each query read the memory it was given and itself (mlen + 1
    # keys), where Transformer-XL's reads its memory_length.
    mask = blocked_keys(qlen, mlen, mlen + 1, same_length, device)[None].float() if causal else None
    data = None
    if input_mask is not None:
        data = input_mask[:, None, :].float().to(device)
    if perm_mask is not None:
        data = perm_mask.float().to(device) if data is None else data + perm_mask.float().to(device)
    if data is not None:
        data = torch.cat([data.new_zeros(*data.shape[:2], mlen), data], dim=-1)
        mask = data if mask is None else mask + data
    if mask is None:
        return None, None
    query = (mask > 0).to(dtype)
    itself = torch.cat([torch.zeros(qlen, mlen), torch.eye(qlen)], dim=-1).to(query)
    content = ((query - itself) > 0).to(dtype)
    return content, query


def segment_mask(token_type_ids: torch.Tensor | None, mlen: int) -> torch.Tensor | None:
    """(batch, qlen, mlen + qlen), True where a query and a key are of different segments; the
    memory counts as segment 0. None without token types: then no segment term at all."""
    if token_type_ids is None:
        return None
    keys = torch.cat([token_type_ids.new_zeros(token_type_ids.shape[0], mlen), token_type_ids], dim=1)
    return token_type_ids[:, :, None] != keys[:, None, :]


def _project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(batch, t, hidden) x (hidden, heads, head_dim) -> (batch, t, heads, head_dim)."""
    return torch.einsum("bth,hnd->btnd", x, weight)


class TwoStreamAttention(nn.Module):
    """One layer's relative attention for the content stream and, when given, the query stream,
    with its residual and norm. Projections keep the checkpoints' (hidden, heads, head_dim)
    layout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, n, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        for name in ("q", "k", "v", "o", "r"):  # o maps back: (hidden, heads, head_dim) too
            setattr(self, name, nn.Parameter(torch.empty(d, n, dh)))
        self.content_bias = nn.Parameter(torch.empty(n, dh))  # u, r_w_bias
        self.position_bias = nn.Parameter(torch.empty(n, dh))  # v, r_r_bias
        self.segment_bias = nn.Parameter(torch.empty(n, dh))  # s, r_s_bias
        self.segment_embed = nn.Parameter(torch.empty(2, n, dh))  # same segment, different
        self.norm = make_norm(cfg, d)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.scale = dh**-0.5
        if not on_meta():
            with torch.no_grad():
                for p in (self.q, self.k, self.v, self.o, self.r, self.content_bias, self.position_bias,
                          self.segment_bias, self.segment_embed):
                    p.normal_(0.0, 0.02)

    def scores_to_values(self, q, k, v, kr, segments, mask) -> torch.Tensor:
        """q (b, i, n, d) attends over k, v (b, j, n, d); kr (b or 1, distances, n, d) are the
        projected distances; -> (b, i, n, d)."""
        content = torch.einsum("bind,bjnd->bnij", q + self.content_bias, k)
        position = torch.einsum("bind,brnd->bnir", q + self.position_bias, kr.expand(q.shape[0], -1, -1, -1))
        scores = content + relative_shift(position, k.shape[1])
        if segments is not None:
            seg = torch.einsum("bind,snd->bnis", q + self.segment_bias, self.segment_embed)
            scores = scores + torch.where(segments[:, None], seg[..., 1:], seg[..., :1])
        scores = scores * self.scale
        if mask is not None:
            big = 65500.0 if mask.dtype == torch.float16 else 1e30
            scores = scores - big * mask[:, None]
        probs = self.dropout(torch.softmax(scores, dim=-1))
        return torch.einsum("bnij,bjnd->bind", probs, v)

    def post(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("bind,hnd->bih", attended, self.o)
        return self.norm(self.dropout(out) + x)

    def forward(self, h, g, mask_h, mask_g, positions, segments, memory=None, target_mapping=None):
        """h (b, qlen, hidden) the content stream, g (b, m, hidden) the query stream or None;
        ``positions`` (b or 1, distances, hidden); ``memory`` (b, mlen, hidden) or None;
        ``target_mapping`` (b, m, qlen) or None. -> (h, g) after attention."""
        both = h if memory is None else torch.cat([memory, h], dim=1)
        k, v = _project(both, self.k), _project(both, self.v)
        kr = _project(positions.to(self.r.dtype), self.r)
        h_out = self.post(h, self.scores_to_values(_project(h, self.q), k, v, kr, segments, mask_h))
        if g is None:
            return h_out, None
        qg = _project(g, self.q)
        if target_mapping is not None:
            # Each prediction's query moves to its target's position (its distances are that
            # position's), and its result comes back.
            qg = torch.einsum("bmnd,bml->blnd", qg, target_mapping)
            attended = torch.einsum("blnd,bml->bmnd", self.scores_to_values(qg, k, v, kr, segments, mask_g),
                                    target_mapping)
        else:
            attended = self.scores_to_values(qg, k, v, kr, segments, mask_g)
        return h_out, self.post(g, attended)


__all__ = ["TwoStreamAttention", "segment_mask", "stream_masks"]
