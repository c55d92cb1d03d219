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
    ``overrides`` give (num_layers, num_heads, hidden_size, ..., dropout), with the tokenizer's
    vocabulary and special tokens. ``head`` and ``causal`` say what the objective trains."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if is_checkpoint(spec):
        if overrides:
            raise FieldError(lambda f: f"size options ({', '.join(map(f, overrides))}) only apply to an "
                                       f"architecture preset, not to the checkpoint {spec}")
        return _from_checkpoint(spec, head, tokenizer, block, causal).train()
    return _from_preset(spec, head, tokenizer, block, overrides, causal).train()


def is_checkpoint(spec: str) -> bool:
    """Whether ``spec`` names a checkpoint (a folder or hub id) rather than an architecture preset."""
    from ..catalog import architecture_names

    return Path(spec).expanduser().is_dir() or ("/" in spec and spec not in architecture_names())


def check_model(spec: str, head: str, overrides: dict[str, Any] | None = None, causal: bool | None = None) -> str | None:
    """What ``build_model`` will refuse, found before any work or any write (the tokenizer is
    trained later, so a preset is tried at a stand-in vocabulary): a checkpoint that is not
    there, a preset that does not exist, a size its config.json cannot express, a model of
    the wrong kind. Returns the preset's ``model_type`` (None for a checkpoint)."""
    from ..catalog import architecture_preset
    from ..checkpoint import resolve
    from ..save import hf_config

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None and k != "dropout"}
    if is_checkpoint(spec):
        if overrides:
            raise FieldError(lambda f: f"size options ({', '.join(map(f, overrides))}) only apply to an "
                                       f"architecture preset, not to the checkpoint {spec}")
        resolve(spec, weights=False)
        return None
    preset = architecture_preset(spec, vocab_size=256, **overrides)
    _check_kind(f"the architecture {spec}", preset.config, preset.skeleton == "encoder-decoder", head, causal)
    hf_config(preset.config, head)
    return preset.config.model_type


def _check_kind(name: str, cfg, encoder_decoder: bool, head: str, causal: bool | None) -> None:
    """That the model ``name`` is what the objective trains (its ``head``, and ``causal``)."""
    if head == "seq2seq-lm" and not encoder_decoder:
        raise LmatlasError(f"{name} is not an encoder-decoder (T5, BART), which this objective trains")
    if head != "seq2seq-lm" and encoder_decoder:
        raise LmatlasError(f"{name} is an encoder-decoder; this objective trains an encoder or a decoder")
    if causal is not None and cfg.causal != causal:
        kind = "a decoder (GPT-style)" if causal else "an encoder (BERT-style)"
        raise LmatlasError(f"{name} is not {kind}, which this objective trains")


def _from_checkpoint(spec: str, head: str, tokenizer, block: int, causal: bool | None) -> LmatlasModel:
    from ..loader import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a head the checkpoint lacks starts fresh, as wanted
        model = load(spec, head=head, dequantize=True)
    cfg = model.config
    if len(tokenizer) > cfg.vocab_size:
        raise LmatlasError(
            f"the tokenizer has {len(tokenizer)} tokens, but the model {spec} has a vocabulary of {cfg.vocab_size}; "
            "use the model's own tokenizer or one that fits"
        )
    _check_kind(spec, cfg, cfg.is_encoder_decoder, head, causal)
    usable = cfg.usable_positions
    if usable is not None and block > usable:
        raise FieldError(lambda f: f"{f('block')} {block} is longer than the {usable} positions of {spec}")
    return model


def _from_preset(spec: str, head: str, tokenizer, block: int, overrides: dict[str, Any],
                 causal: bool | None) -> LmatlasModel:
    from ..catalog import architecture_preset
    from ..save import as_saved

    dropout = overrides.pop("dropout", None)
    fields = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id,
                  eos_token_id=tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id)
    if dropout is not None:
        fields.update(hidden_dropout=dropout, attention_dropout=dropout)
    preset = architecture_preset(spec, **fields, **overrides)
    cfg = preset.config
    _check_kind(f"the architecture {spec}", cfg, preset.skeleton == "encoder-decoder", head, causal)
    if preset.skeleton == "encoder-decoder":
        # T5 starts decoding from the padding token, BART's family from </s>.
        start = tokenizer.pad_token_id if cfg.model_type == "t5" else fields["eos_token_id"]
        if start is None:
            raise LmatlasError(f"the tokenizer {tokenizer.name_or_path} has no "
                               f"{'padding' if cfg.model_type == 't5' else 'end-of-sequence'} token, "
                               f"which {cfg.model_type} starts decoding from")
        cfg = cfg.replace(decoder_start_token_id=start)
        block += 2  # room for the start and end tokens of a target
    cfg = cfg.replace(max_positions=max(_positions_needed(cfg, block), 1) if cfg.position_embedding in
                      ("learned", "sinusoidal") else max(cfg.max_positions, block))
    if cfg.type_vocab_size:
        cfg = cfg.replace(type_vocab_size=min(cfg.type_vocab_size, 2))
    # Built as loading its saved folder will build it (and failing now, not at the first
    # checkpoint, if it cannot be saved).
    model = LmatlasModel(as_saved(cfg, head), head)
    init_from_scratch(model)
    return model


__all__ = ["build_model", "check_model", "is_checkpoint"]
