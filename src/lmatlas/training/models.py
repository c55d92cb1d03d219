"""Models to train: an architecture preset built from scratch at any size, or a checkpoint
folder to continue from, checked against the objective and the tokenizer."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..errors import LmatlasError
from ..model import LmatlasModel
from .fields import FieldError
from .init import init_from_scratch


def _positions_needed(cfg, block: int) -> int:
    """max_positions that lets the model read ``block`` tokens (RoBERTa and OPT skip a few)."""
    if cfg.positions_from_padding:
        return block + (cfg.pad_token_id or 0) + 1
    return block + cfg.position_offset


def build_model(
    spec: str,
    head: str,
    tokenizer,
    block: int,
    overrides: dict[str, Any] | None = None,
    causal: bool | None = None,
) -> LmatlasModel:
    """A model to train: ``spec`` is a checkpoint folder (or hub id) to continue from, or an
    architecture preset (``lmatlas catalog --architectures``) built from scratch at the size
    ``overrides`` give (num_layers, num_heads, hidden_size, ...), with the tokenizer's
    vocabulary and special tokens."""
    from ..catalog import architecture_names, architecture_preset
    from ..loader import load

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    vocab = len(tokenizer)
    if Path(spec).expanduser().is_dir() or ("/" in spec and spec not in architecture_names()):
        if overrides:
            raise FieldError(lambda f: f"size options ({', '.join(map(f, overrides))}) only apply to an "
                                       f"architecture preset, not to the checkpoint {spec}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a head the checkpoint lacks starts fresh, as wanted
            model = load(spec, head=head)
        cfg = model.config
        if vocab > cfg.vocab_size:
            raise LmatlasError(
                f"the tokenizer has {vocab} tokens, but the model {spec} has a vocabulary of {cfg.vocab_size}; "
                "use the model's own tokenizer or one that fits"
            )
        if causal is not None and cfg.causal != causal:
            kind = "a decoder (GPT-style)" if causal else "an encoder (BERT-style)"
            raise LmatlasError(f"{spec} is not {kind} model, which this objective trains")
        if (head == "seq2seq-lm") != cfg.is_encoder_decoder:
            kind = "an encoder-decoder (T5, BART)" if head == "seq2seq-lm" else "an encoder or a decoder"
            raise LmatlasError(f"{spec} is not {kind} model, which this objective trains")
        usable = cfg.usable_positions
        if usable is not None and block > usable:
            raise FieldError(lambda f: f"{f('block')} {block} is longer than the {usable} positions of {spec}")
        return model.train()
    dropout = overrides.pop("dropout", None)
    fields = dict(vocab_size=vocab, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id,
                  eos_token_id=tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id)
    if dropout is not None:
        fields.update(hidden_dropout=dropout, attention_dropout=dropout)
    preset = architecture_preset(spec, **fields, **overrides)
    cfg = preset.config
    if preset.skeleton == "encoder-decoder":
        if head != "seq2seq-lm":
            raise LmatlasError(f"the architecture {spec} is an encoder-decoder; this objective trains "
                               "an encoder or a decoder")
        # T5 starts decoding from the padding token, BART's family from </s>.
        start = tokenizer.pad_token_id if cfg.model_type == "t5" else fields["eos_token_id"]
        if start is None:
            raise LmatlasError(f"the tokenizer {tokenizer.name_or_path} has no "
                               f"{'padding' if cfg.model_type == 't5' else 'end-of-sequence'} token, "
                               f"which {cfg.model_type} starts decoding from")
        cfg = cfg.replace(decoder_start_token_id=start)
        block += 2  # room for the start and end tokens of a target
    elif head == "seq2seq-lm":
        raise LmatlasError(f"the architecture {spec} is not an encoder-decoder (T5, BART), which this objective trains")
    if causal is not None and cfg.causal != causal:
        kind = "a decoder (GPT-style)" if causal else "an encoder (BERT-style)"
        raise LmatlasError(f"the architecture {spec} is not {kind}, which this objective trains")
    cfg = cfg.replace(max_positions=max(_positions_needed(cfg, block), 1) if cfg.position_embedding in
                      ("learned", "sinusoidal") else max(cfg.max_positions, block))
    if cfg.type_vocab_size:
        cfg = cfg.replace(type_vocab_size=min(cfg.type_vocab_size, 2))
    from ..save import as_saved

    # As loading the saved folder will build it (and fail now, not at the first checkpoint,
    # if it cannot be saved).
    model = LmatlasModel(as_saved(cfg, head), head)
    init_from_scratch(model)
    return model.train()


__all__ = ["build_model"]
