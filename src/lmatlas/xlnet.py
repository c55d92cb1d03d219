"""XLNet's stack (Yang et al., 2019): Transformer-XL's recurrence and relative positions, run as
two streams for permutation language modelling (``lmatlas.two_stream``).

- *Recurrence.* Each layer's input states are kept as memory (``mems``) and read as extra keys
  by the next segment: at most ``mem_len`` of them, from the first ``reuse_len`` tokens of a
  segment when that is set (``xlnet_config``). ``mems`` come and go as transformers has them:
  one (memory length, batch, hidden) tensor per layer, so that either library continues the
  other's segments.
- *Positions* are distances between tokens (sinusoids projected per layer), so the memory
  needs no position of its own and the model has no length limit.
- *Segments* (``token_type_ids``) are only told apart (same or different), never looked up.
- *Padding*: ``attention_mask`` (1 on tokens) or the original code's ``input_mask`` (1 on
  padding), not both. XLNet's tokenizer pads on the left: its heads read the last position.

``GenerationMemory`` is what decoding carries between steps (``generation`` calls
``forward`` with it as the cache); ``forward`` joins the stack to its head.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .blocks import MLP, embedding, make_norm, on_meta
from .config import ModelConfig
from .errors import LmatlasError
from .recurrence import relative_encodings, update_memory
from .two_stream import TwoStreamAttention, segment_mask, stream_masks


class XLNetEmbeddings(nn.Module):
    """The token table, and the one learned vector every query stream starts from (``mask_emb``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tokens = embedding(cfg.vocab_size, cfg.hidden_size)
        self.query = nn.Parameter(torch.empty(1, 1, cfg.hidden_size))
        if not on_meta():
            nn.init.normal_(self.query, 0.0, 0.02)


class XLNetLayer(nn.Module):
    """Two-stream relative attention, then the position-wise MLP (post-norm), applied to each
    stream with the same weights."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = TwoStreamAttention(cfg)
        self.mlp = MLP(cfg)
        self.mlp_norm = make_norm(cfg, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp.fc_out(self.dropout(self.mlp.act(self.mlp.fc_in(x))))
        return self.mlp_norm(x + self.dropout(y))

    def forward(self, h, g, mask_h, mask_g, positions, segments, memory, target_mapping):
        h, g = self.attn(h, g, mask_h, mask_g, positions, segments, memory, target_mapping)
        return self.feed_forward(h), None if g is None else self.feed_forward(g)


class XLNetBackbone(nn.Module):
    """Token ids -> the last states of the content stream, or of the query stream's predictions
    when ``target_mapping`` is given; with the new memory when memory is kept."""

    # Its heads read the last position (<cls>): batches are padded on the left (pipelines ask).
    padding_side = "left"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.xlnet is None:
            raise LmatlasError("an XLNet stack needs the config's xlnet settings")
        self.config = cfg
        self.settings = cfg.xlnet
        self.embeddings = XLNetEmbeddings(cfg)
        self.layers = nn.ModuleList(XLNetLayer(cfg) for _ in range(cfg.num_layers))
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def new_cache(self, batch_size: int, max_length: int, **_: Any) -> "GenerationMemory":
        return GenerationMemory()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        input_mask: torch.Tensor | None = None,
        perm_mask: torch.Tensor | None = None,
        target_mapping: torch.Tensor | None = None,
        mems: Sequence[torch.Tensor] | None = None,
        use_mems: bool | None = None,
        output_hidden_states: bool = False,
    ) -> dict[str, Any]:
        s = self.settings
        b, qlen = check_inputs(self.config, input_ids, attention_mask, token_type_ids, input_mask, perm_mask,
                               target_mapping)
        memory = check_mems(self.config, mems, b)
        mlen = 0 if memory is None else memory[0].shape[1]
        if use_mems is None:
            use_mems = s.use_mems_train if self.training else s.use_mems_eval
        dtype = self.embeddings.query.dtype
        if attention_mask is not None:
            input_mask = 1.0 - attention_mask.float()
        mask_h, mask_g = stream_masks(qlen, mlen, b, s.causal, s.same_length, input_mask, perm_mask, dtype,
                                      input_ids.device)
        h = self.dropout(self.embeddings.tokens(input_ids))
        g = None
        if target_mapping is not None:
            target_mapping = target_mapping.to(dtype)
            g = self.dropout(self.embeddings.query.expand(b, target_mapping.shape[1], -1))
        segments = segment_mask(token_type_ids, mlen)
        # Distances from mlen + qlen (one more than Transformer-XL's table) down to 0, or with
        # attention both ways to -(qlen - 1); bi_data reads half the batch backward.
        positions = relative_encodings(mlen + qlen, 0 if s.causal else 1 - qlen, self.config.hidden_size,
                                       s.clamp_len, h.device, bi_data_batch=b if s.bi_data else 0)
        positions = self.dropout((positions if s.bi_data else positions[None]).to(dtype))
        new_mems = [] if use_mems else None
        states = [] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            previous = None if memory is None else memory[i]
            if new_mems is not None:  # mem_len 0 keeps every state (Transformer-XL's: none)
                new_mems.append(update_memory(None if previous is None else previous.transpose(0, 1), h,
                                              s.mem_len or None, s.reuse_len))
            if states is not None:
                states.append((h, g) if g is not None else (h,))
            h, g = layer(h, g, mask_h, mask_g, positions, segments, previous, target_mapping)
        if states is not None:
            states.append((h, g) if g is not None else (h,))
        out: dict[str, Any] = {"last_hidden_state": self.dropout(g if g is not None else h)}
        # transformers' layout: (length, batch, hidden) per layer.
        out["mems"] = None if new_mems is None else tuple(new_mems)
        if states is not None:
            out["hidden_states"] = tuple(x for pair in states for x in pair)
        return out


def _shape_error(name: str, tensor: Any, expected: str) -> LmatlasError:
    got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
    return LmatlasError(f"{name} must be {expected}, not {got}")


def check_inputs(cfg: ModelConfig, input_ids, attention_mask, token_type_ids, input_mask, perm_mask,
                 target_mapping) -> tuple[int, int]:
    """(batch, length) of well-formed inputs; a sentence naming the argument otherwise."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        raise _shape_error("input_ids", input_ids, "(batch, length) token ids")
    b, t = input_ids.shape
    if t == 0:
        raise LmatlasError("input_ids is empty: give at least one token")
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= cfg.vocab_size:
        raise LmatlasError(f"input_ids holds a token id outside the vocabulary (0..{cfg.vocab_size - 1})")
    if attention_mask is not None and input_mask is not None:
        raise LmatlasError("give attention_mask (1 on tokens) or input_mask (1 on padding), not both")
    for name, x in (("attention_mask", attention_mask), ("input_mask", input_mask),
                    ("token_type_ids", token_type_ids)):
        if x is not None and (not isinstance(x, torch.Tensor) or tuple(x.shape) != (b, t)):
            raise _shape_error(name, x, f"(batch, length) = {(b, t)} as input_ids")
    if perm_mask is not None and (not isinstance(perm_mask, torch.Tensor) or tuple(perm_mask.shape) != (b, t, t)):
        raise _shape_error("perm_mask", perm_mask, f"(batch, length, length) = {(b, t, t)}")
    if target_mapping is not None and (
        not isinstance(target_mapping, torch.Tensor) or target_mapping.ndim != 3
        or target_mapping.shape[0] != b or target_mapping.shape[2] != t or target_mapping.shape[1] == 0
    ):
        raise _shape_error("target_mapping", target_mapping, f"(batch, predictions, length) = ({b}, n, {t})")
    if cfg.xlnet.bi_data and b % 2:
        raise LmatlasError(f"bi_data reads half the batch forward and half backward: give an even batch, not {b}")
    return b, t


def check_mems(cfg: ModelConfig, mems, batch: int) -> list[torch.Tensor] | None:
    """``mems`` as (batch, length, hidden) per layer, or None; checked against the model."""
    if mems is None:
        return None
    expected = f"{cfg.num_layers} tensors (one per layer) of (memory length, {batch}, {cfg.hidden_size})"
    if not isinstance(mems, (list, tuple)) or len(mems) != cfg.num_layers:
        raise LmatlasError(f"mems must be {expected}, as a previous call returns them; got "
                           f"{len(mems) if isinstance(mems, (list, tuple)) else type(mems).__name__}")
    length = None
    for i, m in enumerate(mems):
        if not isinstance(m, torch.Tensor) or m.ndim != 3 or m.shape[1:] != (batch, cfg.hidden_size):
            raise _shape_error(f"mems[{i}]", m, f"(memory length, {batch}, {cfg.hidden_size})")
        if length is not None and m.shape[0] != length:
            raise LmatlasError(f"mems[{i}] holds {m.shape[0]} states, mems[0] {length}: every layer's memory is as long")
        length = m.shape[0]
    return [m.transpose(0, 1) for m in mems]


class GenerationMemory:
    """What XLNet carries from one decoding step to the next, as transformers' XLNetLMHeadModel
    prepares its inputs for ``generate()``.

    Each step reads the sequence so far with a dummy token (id 0) appended that nothing may
    see (``perm_mask``) and whose query-stream state is the only prediction
    (``target_mapping``): the next token's logits. Once memory is kept, a step re-reads only the
    last ``OFFSET`` tokens (and the dummy), the rest coming from the memory, whose last
    ``OFFSET`` states (those tokens' and the previous dummy's) are dropped first. Without memory
    (``use_mems_eval`` off) each step reads the whole sequence. The attention mask is not used:
    as in transformers, padding of a batch of prompts is read like text."""

    OFFSET = 2

    def __init__(self) -> None:
        self.tokens: torch.Tensor | None = None  # (rows, length so far)
        self.mems: tuple[torch.Tensor, ...] | None = None

    @property
    def length(self) -> int:
        return 0 if self.tokens is None else self.tokens.shape[1]

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row r continues row ``index[r]``."""
        if self.tokens is not None:
            self.tokens = self.tokens.index_select(0, index)
        if self.mems is not None:
            self.mems = tuple(m.index_select(1, index) for m in self.mems)

    def step(self, new_ids: torch.Tensor) -> dict[str, Any]:
        """The model's inputs for the step that reads ``new_ids`` (the prompt, then each new token)."""
        self.tokens = new_ids if self.tokens is None else torch.cat([self.tokens, new_ids], dim=1)
        rows = self.tokens.shape[0]
        ids = self.tokens if self.mems is None else self.tokens[:, -self.OFFSET :]
        ids = torch.cat([ids, ids.new_zeros(rows, 1)], dim=1)
        t = ids.shape[1]
        perm_mask = torch.zeros(rows, t, t, device=ids.device)
        perm_mask[:, :, -1] = 1.0
        target_mapping = torch.zeros(rows, 1, t, device=ids.device)
        target_mapping[:, 0, -1] = 1.0
        mems = None if self.mems is None else [m[: -self.OFFSET] for m in self.mems]
        return {"input_ids": ids, "perm_mask": perm_mask, "target_mapping": target_mapping, "mems": mems}


BACKBONE_INPUTS = ("input_mask", "perm_mask", "target_mapping", "mems", "use_mems")


def forward(model, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, cache=None,
            output_hidden_states: bool = False, **inputs: Any) -> dict[str, Any]:
    """An XLNet ``LmatlasModel``'s forward pass: the stack's own inputs (``BACKBONE_INPUTS``),
    then its head with the head's own (the beam question-answering head's ``p_mask``,
    ``cls_index`` and training labels). ``cache``: a ``GenerationMemory`` when decoding."""
    head = model.head
    head_inputs = set(getattr(head, "INPUTS", ()))
    unknown = sorted(set(inputs) - set(BACKBONE_INPUTS) - head_inputs)
    if unknown:
        raise LmatlasError(f"XLNet ({model.head_name} head) takes no argument {unknown[0]!r}")
    backbone_inputs = {k: v for k, v in inputs.items() if k in BACKBONE_INPUTS}
    if cache is not None:
        if not isinstance(cache, GenerationMemory):
            raise LmatlasError("an XLNet model decodes with its own memory (model.new_cache), not a key/value cache")
        step = cache.step(input_ids)
        input_ids = step.pop("input_ids")
        attention_mask = position_ids = None
        backbone_inputs.update(step)
    elif position_ids is not None:
        raise LmatlasError("XLNet reads the distances between tokens; it takes no position_ids")
    choices = None
    if model.head_name == "multiple-choice":  # (batch, choices, length): each choice on its own
        choices, input_ids, attention_mask, token_type_ids, backbone_inputs = _flatten_choices(
            input_ids, attention_mask, token_type_ids, backbone_inputs)
    out = model.backbone(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states,
                         **backbone_inputs)
    if cache is not None:
        cache.mems = out["mems"]
    if head is None:
        return out
    head_args = {k: v for k, v in inputs.items() if k in head_inputs}
    if choices is not None:
        head_args["num_choices"] = choices
    result = head(out, **head_args)
    for key in ("mems", "hidden_states"):
        if out.get(key) is not None:
            result[key] = out[key]
    return result


def _flatten_choices(input_ids, attention_mask, token_type_ids, inputs):
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 3:
        raise _shape_error("input_ids", input_ids, "(batch, choices, length) for a multiple-choice head")
    b, c, t = input_ids.shape

    def flat(x, name):
        if x is None:
            return None
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != (b, c, t):
            raise _shape_error(name, x, f"(batch, choices, length) = {(b, c, t)} as input_ids")
        return x.reshape(b * c, t)

    inputs = dict(inputs)
    if inputs.get("input_mask") is not None:
        inputs["input_mask"] = flat(inputs["input_mask"], "input_mask")
    return (c, input_ids.reshape(b * c, t), flat(attention_mask, "attention_mask"),
            flat(token_type_ids, "token_type_ids"), inputs)


__all__ = ["BACKBONE_INPUTS", "GenerationMemory", "XLNetBackbone", "XLNetLayer", "check_inputs", "check_mems",
           "forward"]
