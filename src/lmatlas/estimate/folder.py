"""A checkpoint folder: its exact parameter count, from the weight files' headers, and its shape,
from its ``config.json`` read by the family's preset."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..catalog import ArchitecturePreset
from ..checkpoint import Weights, read_config
from ..errors import LmatlasError
from ..presets import head_from_architectures, model_types, preset_for
from .counting import shape_of
from .generic import generic_shape

# Buffers that some checkpoints store but that are not parameters: position-id ranges, rotary
# frequencies, fairseq's placeholder, BART's final_logits_bias. GPT-2's causal mask
# ("attn.bias", 4-D) is recognised by its shape.
_BUFFER_SUFFIXES = (
    ".position_ids", ".token_type_ids", ".inv_freq", "._float_tensor", ".masked_bias", "final_logits_bias",
)
# Output projections that are tied to the input embeddings (dropped only when the config ties
# them and an input table of the same shape is present).
_OUTPUT_SUFFIXES = (
    "lm_head.weight", "cls.predictions.decoder.weight", "predictions.decoder.weight",
    "lm_head.decoder.weight", "generator_lm_head.weight", "vocab_projector.weight",
)
_INPUT_SUFFIXES = (
    "word_embeddings.weight", "wte.weight", "embed_tokens.weight", "shared.weight",
    "tokens_embed.weight", "embed_in.weight", "transformer.w.weight",
)
_STACK_TABLES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def folder_params(folder: str | os.PathLike) -> int:
    """The exact number of parameters of the model saved in ``folder``, as transformers'
    ``model.num_parameters()`` counts them, read from the weight files' headers."""
    folder = Path(folder)
    return stored_params(read_config(folder), Weights(folder).shapes())


def stored_params(hf: dict, shapes: dict[str, tuple[tuple[int, ...], Any]]) -> int:
    """Parameters in ``shapes`` (name -> (shape, storage identity), see ``Weights.shapes``).

    A file count differs from the model's in three ways, each handled here: ``save_pretrained``
    leaves out weights tied to the input embeddings (nothing to do), older files keep the tied
    copy or share it by storage (counted once), and some files keep buffers that are not
    parameters (causal masks, position ids, BART's final_logits_bias: not counted).
    """
    tied = bool(hf.get("tie_word_embeddings", True))
    if hf.get("model_type") == "t5" and "scale_decoder_outputs" in hf:
        # transformers 5 writes T5's tie_word_embeddings always true, and keeps a stored lm_head
        # untied unless it equals the token table (not told by the headers: counted as untied).
        tied = False
    inputs = {shape for n, (shape, _) in shapes.items() if n.endswith(_INPUT_SUFFIXES)}
    seen: set[Any] = set()
    total = 0
    for name, (shape, ident) in shapes.items():
        if _not_a_parameter(name, shape, shapes) or (tied and name.endswith(_OUTPUT_SUFFIXES) and shape in inputs):
            continue
        if ident not in seen:
            seen.add(ident)
            total += math.prod(shape)
    return total


def _not_a_parameter(name: str, shape: tuple[int, ...], names: dict) -> bool:
    if name.endswith(_BUFFER_SUFFIXES) or (name.endswith(".attn.bias") and len(shape) == 4):
        return True
    # Encoder-decoders: both stacks' token tables are the shared one.
    for table in _STACK_TABLES:
        if name.endswith(table) and name[: -len(table)] + "shared.weight" in names:
            return True
    # Masked-LM heads: the decoder's bias is the head's own bias (BERT, RoBERTa).
    return name.endswith(".decoder.bias") and name[: -len("decoder.bias")] + "bias" in names


def folder_shape(folder: str | os.PathLike, hf: dict | None = None) -> tuple[ArchitecturePreset, list[str]]:
    """The shape of the model in ``folder``, and notes on how it was read.

    The family's preset reads ``config.json``, as when lmatlas loads the model. The ties a preset
    reads from the weights change only which tables are stored, which the exact count sees; no
    estimate depends on them, so they are left out. A ``model_type`` without a preset is read
    from the keys most families share (``generic_shape``), and says so in a note.
    """
    folder = Path(folder)
    hf = read_config(folder) if hf is None else hf
    source = str(folder / "config.json")
    model_type = hf.get("model_type")
    if model_type not in model_types():
        note = (
            f"model_type {model_type!r} has no lmatlas preset: its shape is read from config.json's "
            "common keys, an approximation (the parameter count is exact)"
        )
        return generic_shape(hf, source, folder.name), [note]
    preset = preset_for(model_type, source)
    try:
        head = head_from_architectures(preset, hf.get("architectures") or [], source)
    except LmatlasError:
        head = "base"  # a head lmatlas does not build still has the backbone's shape
    try:
        cfg = preset.config(hf, head)
    except (KeyError, TypeError, ValueError) as e:
        raise LmatlasError(f"{source}: cannot be read as a {model_type} config ({e})") from None
    return shape_of(cfg, folder.name, source), []
