"""Transformer-XL (Dai et al., 2019): segment-level recurrence with relative positional attention.

A long text is read a segment at a time. Each layer attends to the segment and to the *memory*:
the hidden states that entered the same layer during the previous segments, the last
``memory_length`` of them, carried from one forward pass to the next without gradient. The
context a token sees thus grows with depth far past one segment, and evaluating a long text
costs one segment's work per segment instead of a whole window's per token.

Reused states cannot keep absolute positions (the same position recurs in every segment), so
positions are relative. Query i and key j score

    (q_i + u) . k_j   +   (q_i + v) . W_r R(i - j)
      content              position

R a sinusoid of the distance (clamped at ``clamp_length``), W_r a projection of each layer, u and
v learned biases per head (the same for every query, as a query's position no longer matters).
The position term is computed for the K distances once per query, then re-indexed so that
column j holds distance i - j: the "relative shift" (``relative_shift``). ``same_length`` gives
every token the same span, the ``memory_length`` keys that end at itself (without it a segment's
last tokens see more than its first).

Memories are laid out as transformers lays them: a list of one (length, batch, hidden) tensor per
layer, the inputs of that layer. ``RecurrentDecoder`` is the backbone; ``Memory`` is its cache
for the generation engine, which carries the memory from step to step as transformers'
``TransfoXLLMHeadModel.generate`` passes ``mems``. The adaptive embeddings are in ``adaptive``.

XLNet (``xlnet``, ``two_stream``) is built on the same ideas and reads them from here: the
encodings of the distances, the relative shift, the causal and same-length mask, the memory
update; where it differs (bi_data, reuse_len, attention both ways) that is a parameter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adaptive import AdaptiveEmbedding
from .blocks import MLP, make_norm, random_parameter
from .config import ModelConfig
from .errors import LmatlasError

# transformers' initialisation of the biases u and v (init_std).
BIAS_STD = 0.02


def inverse_frequencies(width: int, device=None) -> torch.Tensor:
    """(width / 2,): the sinusoids' frequencies, 1 / 10000^(2k / width)."""
    return 1.0 / (10000 ** (torch.arange(0.0, width, 2.0, device=device) / width))


def relative_encodings(first: int, last: int, width: int, clamp: int, device=None,
                       bi_data_batch: int = 0) -> torch.Tensor:
    """(first - last + 1, width): [sin | cos] of the distances first, first - 1, ..., last,
    clamped to +-``clamp`` when it is positive (float32).

    Transformer-XL reads the keys' distances to the last query, klen - 1 down to 0. XLNet starts
    one further, at klen (the column ``relative_shift`` would otherwise pad), and with attention
    both ways runs on to -(qlen - 1). ``bi_data_batch`` (XLNet's bi_data, a batch of pairs):
    (batch, distances, width), the first half of the batch reading the distances forward, the
    second half negated (each pair's reversed sequence)."""
    forward = torch.arange(first, last - 1, -1, dtype=torch.int64, device=device).float()
    inv_freq = inverse_frequencies(width, device)
    tables = []
    for distance in [forward, -forward] if bi_data_batch else [forward]:
        if clamp > 0:
            distance = distance.clamp(-clamp, clamp)
        angles = torch.outer(distance, inv_freq)
        tables.append(torch.cat([angles.sin(), angles.cos()], dim=-1))
    if not bi_data_batch:
        return tables[0]
    half = bi_data_batch // 2
    return torch.cat([t[None].expand(half, -1, -1) for t in tables], dim=0)


def relative_shift(scores: torch.Tensor, klen: int) -> torch.Tensor:
    """(..., q, r) scores of each query against the distances klen, klen - 1, ... (r of them) ->
    (..., q, klen): row i, column j holds the score at distance (klen - q + i) - j, query i
    being key klen - q + i. The rows are re-read one element later each (Transformer-XL's skew,
    by reshapes rather than a gather). A table that stops at distance 0 (Transformer-XL, XLNet's
    "uni") leaves meaningless values where j is after the query, which the mask hides; XLNet's
    "bi" table runs on to -(q - 1), so that every key has its own. Transformer-XL, whose table
    starts at klen - 1, pads a zero column in front for distance klen."""
    *outer, q, r = scores.shape
    skewed = scores.reshape(*outer, r, q)[..., 1:, :].reshape(*outer, q, r - 1)
    return skewed[..., :klen]


def blocked_keys(q: int, mlen: int, span: int, same_length: bool, device=None) -> torch.Tensor:
    """(q, mlen + q) True where query i may not attend to key j: the future, and with
    ``same_length`` the keys ``span`` or more before it (so that each query reads at most
    ``span`` keys, itself the last). Transformer-XL's span is its ``memory_length``; XLNet's
    the memory it was given plus one (``two_stream.stream_masks``)."""
    i = torch.arange(q, device=device)[:, None]
    j = torch.arange(mlen + q, device=device)[None, :]
    blocked = j > i + mlen
    if same_length:
        blocked = blocked | (j <= i + mlen - span)
    return blocked


def update_memory(previous: torch.Tensor | None, states: torch.Tensor, memory_length: int | None,
                  reuse_length: int | None = None) -> torch.Tensor:
    """One layer's memory after a segment, (length, batch, hidden) as transformers lays it out:
    the segment's inputs of that layer ``states`` (batch, t, hidden) after the ``previous``
    memory, the last ``memory_length`` positions kept (None: all of them, XLNet's mem_len 0),
    detached. ``reuse_length`` (XLNet's reuse_len): only the segment's first positions go in."""
    with torch.no_grad():
        states = states.transpose(0, 1)
        if reuse_length:
            states = states[:reuse_length]
        both = states if previous is None else torch.cat([previous, states], dim=0)
        if memory_length is not None:
            both = both[max(0, both.shape[0] - memory_length):]
        return both.detach()


class RelativeAttention(nn.Module):
    """Multi-head attention over memory + segment with relative positions (transformers'
    ``RelPartialLearnableMultiHeadAttn``), with its residual and norm (before: ``pre_lnorm``,
    which normalises the memory too; after: the default). ``content_bias`` is u, ``position_bias``
    v: its own with ``relative_bias_per_layer``, else the model's pair, given to ``forward``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n, dh, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
        self.heads, self.head_dim = n, dh
        self.qkv = nn.Linear(d, 3 * n * dh, bias=False)
        self.positions = nn.Linear(d, n * dh, bias=False)  # W_r
        self.out = nn.Linear(n * dh, d, bias=False)
        self.norm = make_norm(cfg, d)
        self.pre_norm = cfg.norm_position == "pre"
        if cfg.relative_bias_per_layer:
            self.content_bias = random_parameter(n, dh, std=BIAS_STD)
            self.position_bias = random_parameter(n, dh, std=BIAS_STD)
        self.scale = dh**-0.5
        self.attention_dropout = cfg.attention_dropout
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, r: torch.Tensor, blocked: torch.Tensor, memory: torch.Tensor | None,
                biases: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (batch, t, hidden): the segment; r (K, hidden): the distances' encodings; blocked
        (t, K); memory (batch, m, hidden) or None, with K = m + t keys; biases: the shared (u, v)."""
        content, position = biases if biases is not None else (self.content_bias, self.position_bias)
        b, t, _ = x.shape
        n, dh = self.heads, self.head_dim
        both = x if memory is None else torch.cat([memory, x], dim=1)
        q, k, v = self.qkv(self.norm(both) if self.pre_norm else both).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, -1, n, dh).transpose(1, 2) for z in (q[:, -t:], k, v))  # (b, n, len, dh)
        r = self.positions(r).view(-1, n, dh).transpose(0, 1)  # (n, K, dh)
        scores = torch.matmul(q + position[:, None], r.transpose(1, 2))  # (b, n, t, K)
        # The table starts at distance K - 1 (transformers' TransfoXL): a zero column stands for K.
        bias = relative_shift(F.pad(scores, (1, 0)), scores.shape[-1]) * self.scale
        bias = bias.masked_fill(blocked, torch.finfo(bias.dtype).min)
        y = F.scaled_dot_product_attention(
            q + content[:, None], k, v, attn_mask=bias, scale=self.scale,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )  # fmt: skip
        y = self.dropout(self.out(y.transpose(1, 2).reshape(b, t, n * dh)))
        return x + y if self.pre_norm else self.norm(x + y)


class RecurrentLayer(nn.Module):
    """Relative attention, then the position-wise feed-forward layer (ReLU, dropout after the
    activation and after the layer, as transformers' ``PositionwiseFF``), each with its residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = RelativeAttention(cfg)
        self.mlp = MLP(cfg)
        self.mlp_norm = make_norm(cfg, cfg.hidden_size)
        self.pre_norm = cfg.norm_position == "pre"
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mlp
        return self.dropout(m.fc_out(self.dropout(m.act(m.fc_in(x)))))

    def forward(self, x, r, blocked, memory, biases=None):
        x = self.attn(x, r, blocked, memory, biases)
        if self.pre_norm:
            return x + self._feed_forward(self.mlp_norm(x))
        return self.mlp_norm(x + self._feed_forward(x))


class Memory:
    """The generation engine's cache for a recurrent decoder: the memory the last forward pass
    left (None before the first), which the next one continues, as transformers' generate
    passes ``mems`` from step to step; without a memory, the tokens so far. Beam search
    reorders its rows."""

    def __init__(self, batch_size: int):
        self.mems: list[torch.Tensor] | None = None
        self.tokens: torch.Tensor | None = None  # without a memory (mem_len 0): the tokens so far
        self.length = 0  # tokens read so far
        self._rows = batch_size

    @property
    def batch_size(self) -> int:
        return self._rows

    def reorder(self, index: torch.Tensor) -> None:
        """Row r continues from row ``index[r]``."""
        if self.mems is not None:
            self.mems = [m.index_select(1, index.to(m.device)) for m in self.mems]
        if self.tokens is not None:
            self.tokens = self.tokens.index_select(0, index.to(self.tokens.device))

    def nbytes(self) -> int:
        held = [*(self.mems or []), *([] if self.tokens is None else [self.tokens])]
        return sum(t.numel() * t.element_size() for t in held)


class RecurrentDecoder(nn.Module):
    """Transformer-XL's stack (transformers' ``TransfoXLModel``): adaptive embeddings, then
    layers of relative attention over memory + segment; no final norm.

    ``forward`` returns ``last_hidden_state`` and ``mems``, the memory for the next segment
    (absent when ``memory_length`` is 0). Without ``mems`` a forward pass starts from a memory
    of ``memory_length`` zeros, as transformers' does. It reads no attention mask (transformers'
    reads none): right padding is harmless, since no token attends to those after it; any other
    padding is refused.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.hidden_size % 2:
            raise LmatlasError(f"the model width {cfg.hidden_size} must be even: its relative position encodings "
                               "are pairs of sines and cosines")
        self.config = cfg
        self.embeddings = AdaptiveEmbedding(cfg)
        if not cfg.relative_bias_per_layer:  # one u and one v for every layer (untie_r off)
            self.content_bias = random_parameter(cfg.num_heads, cfg.head_dim, std=BIAS_STD)
            self.position_bias = random_parameter(cfg.num_heads, cfg.head_dim, std=BIAS_STD)
        self.layers = nn.ModuleList(RecurrentLayer(cfg) for _ in range(cfg.num_layers))
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def new_cache(self, batch_size: int, max_length: int) -> Memory:
        return Memory(batch_size)

    def empty_memory(self, batch: int) -> list[torch.Tensor] | None:
        """``memory_length`` zeros per layer (None without a memory): what a first segment sees."""
        cfg = self.config
        if not cfg.memory_length:
            return None
        p = self.embeddings.tables[0].weight
        return [p.new_zeros(cfg.memory_length, batch, cfg.hidden_size) for _ in range(cfg.num_layers)]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Memory | None = None,
        output_hidden_states: bool = False,
        mems: list[torch.Tensor] | None = None,
    ) -> dict:
        """``position_ids`` are taken and not read: positions are relative. ``mems`` or ``cache``
        (not both) continue a previous segment."""
        cfg = self.config
        if cache is not None and mems is not None:
            raise LmatlasError("give mems or a cache, not both: the cache holds the memory while decoding")
        _check_padding(attention_mask, cache is not None and cache.length > 0)
        if cfg.same_length and not cfg.memory_length:
            raise LmatlasError("same_length needs a memory: with mem_len 0 no token would have a key to attend to; "
                               "set same_length false or give mem_len")
        if cache is None:
            return self.segment(input_ids, mems, output_hidden_states)
        t = input_ids.shape[1]
        cache.length += t
        if cfg.memory_length:
            out = self.segment(input_ids, cache.mems, output_hidden_states)
            cache.mems = out.get("mems")
            return out
        # Without a memory nothing carries over: the cache keeps the tokens, and each step reads
        # them all again, as transformers' generate does when no mems come back.
        cache.tokens = input_ids if cache.tokens is None else torch.cat([cache.tokens, input_ids], dim=1)
        out = self.segment(cache.tokens, None, output_hidden_states)
        out["last_hidden_state"] = out["last_hidden_state"][:, -t:]
        if output_hidden_states:
            out["hidden_states"] = tuple(h[:, -t:] for h in out["hidden_states"])
        return out

    def segment(self, input_ids: torch.Tensor, memory: list[torch.Tensor] | None,
                output_hidden_states: bool = False) -> dict:
        """One segment read after ``memory`` (or after ``memory_length`` zeros)."""
        cfg = self.config
        b, t = input_ids.shape
        if memory is None:
            memory = self.empty_memory(b)
        else:
            _check_memory(memory, cfg, b)
        mlen = memory[0].shape[0] if memory is not None else 0
        x = self.dropout(self.embeddings(input_ids))
        r = relative_encodings(mlen + t - 1, 0, cfg.hidden_size, cfg.clamp_length, x.device)
        r = self.dropout(r.to(x.dtype))
        blocked = blocked_keys(t, mlen, cfg.memory_length or 0, cfg.same_length, x.device)
        shared = None if cfg.relative_bias_per_layer else (self.content_bias, self.position_bias)
        inputs = []
        for i, layer in enumerate(self.layers):
            inputs.append(x)
            x = layer(x, r, blocked, None if memory is None else memory[i].transpose(0, 1), shared)
        x = self.dropout(x)
        new = None
        if memory is not None:
            new = [update_memory(m, h, cfg.memory_length or 0) for m, h in zip(memory, inputs)]
        out: dict = {"last_hidden_state": x}
        if new is not None:
            out["mems"] = new
        if output_hidden_states:
            out["hidden_states"] = (*inputs, x)
        return out


def _check_padding(attention_mask: torch.Tensor | None, continuing: bool) -> None:
    if attention_mask is None or bool(attention_mask.bool().all()):
        return
    mask = attention_mask.long()
    right_padded = bool((mask[:, 1:] <= mask[:, :-1]).all())
    if continuing or not right_padded:
        raise LmatlasError(
            "Transformer-XL reads no attention mask (nor does transformers' TransfoXLModel): give sequences of "
            "one length, or pad on the right only, and never into a memory"
        )


def _check_memory(memory, cfg: ModelConfig, batch: int) -> None:
    expected = f"a list of {cfg.num_layers} tensors (one per layer) of shape (length, {batch}, {cfg.hidden_size})"
    if not isinstance(memory, (list, tuple)) or len(memory) != cfg.num_layers:
        got = f"{len(memory)} items" if isinstance(memory, (list, tuple)) else type(memory).__name__
        raise LmatlasError(f"mems must be {expected}, as the model returns them; got {got}")
    shapes = [tuple(m.shape) if isinstance(m, torch.Tensor) else None for m in memory]
    if any(s is None or len(s) != 3 or s[1:] != (batch, cfg.hidden_size) or s[0] != shapes[0][0] for s in shapes):
        raise LmatlasError(f"mems must be {expected}, every layer of one length; got shapes {shapes}")


__all__ = [
    "Memory", "inverse_frequencies", "RecurrentDecoder", "RecurrentLayer", "RelativeAttention", "blocked_keys", "relative_encodings",
    "relative_shift", "update_memory",
]  # fmt: skip
