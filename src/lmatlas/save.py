"""Model -> files: the loading stage run backwards, into the Hugging Face folder layout.

The presets map each lmatlas parameter to the checkpoint tensors it is read from; saving walks
the same maps the other way. A fused projection is split back by the sizes of its parts, and a
``Derived`` rearrangement (GPT-2's transposed Conv1D, BLOOM's interleaved heads) is inverted by
running it on the positions of the elements: presets promise that it only moves values, so
the positions it returns are the permutation to undo. ``config.json`` is the checkpoint's own,
updated by the preset's ``to_hf(cfg)`` (the only way for a model built from scratch). The folder
loads in lmatlas and in transformers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .errors import LmatlasError
from .positions import sinusoidal_positions
from .presets import Preset, model_types, preset_for
from .presets._maps import Derived, FirstOf, _flatten
from .quantization import dequantized_weights

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
)  # fmt: skip


def _preset(model_type: str) -> Preset:
    try:
        return preset_for(model_type)
    except LmatlasError:
        raise LmatlasError(
            f"model type {model_type!r} has no Hugging Face format; train one of {', '.join(model_types())} to save it"
        ) from None


def architecture_name(model_type: str, head: str) -> str:
    """transformers' class of ``head`` for ``model_type`` (e.g. ``GPT2LMHeadModel``)."""
    return _preset(model_type).class_name(model_type, head)


def hf_config(cfg: ModelConfig, head: str) -> dict[str, Any]:
    """``config.json`` for a model: the checkpoint's own, with what lmatlas changed written back."""
    preset = _preset(cfg.model_type)
    out = {k: v for k, v in cfg.hf_config.items() if not k.startswith("_")}
    out.update(preset.to_hf(cfg))
    out["model_type"] = out.get("model_type") or cfg.model_type
    out["architectures"] = [architecture_name(out["model_type"], head)]
    out["id2label"] = {str(i): label for i, label in cfg.id2label.items()}
    out["label2id"] = {label: i for i, label in cfg.id2label.items()}
    out["num_labels"] = len(cfg.id2label)
    if cfg.problem_type:
        out["problem_type"] = cfg.problem_type
    out["torch_dtype"] = "float32"
    return out


def as_saved(cfg: ModelConfig, head: str) -> ModelConfig:
    """``cfg`` as loading its saved folder would build it (e.g. BERT's pooler only under the
    heads whose transformers class has one): build models from scratch with this, so that a
    checkpoint reloads into the very same modules."""
    hf = hf_config(cfg, head)  # first: its error names the families that have a format
    return preset_for(cfg.model_type).config(hf, head)


def _inverse(derived: Derived, value: torch.Tensor) -> torch.Tensor:
    """The stored tensor that ``derived.fn`` turns into ``value``."""
    if derived.fn is _flatten:  # BART's final_logits_bias is stored as (1, vocab)
        return value.reshape(1, -1)
    shapes = [tuple(value.shape)]
    if value.ndim == 2:
        shapes.append(tuple(reversed(value.shape)))
    # Stored with leading unit dimensions (ViT's class token and position table).
    shapes += [(1, *value.shape), (1, 1, *value.shape)]
    for shape in shapes:
        positions = torch.arange(value.numel()).reshape(shape)
        try:
            moved = derived.fn(positions)
        except (RuntimeError, IndexError):
            continue
        if tuple(moved.shape) == tuple(value.shape):
            stored = torch.empty(value.numel(), dtype=value.dtype)
            stored[moved.reshape(-1)] = value.reshape(-1)
            return stored.reshape(shape)
    raise AssertionError(f"cannot invert the rearrangement of {derived.names}")


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's tensors under the names (and layouts) transformers' class stores them."""
    cfg, head = model.config, model.head_name
    preset = preset_for(cfg.model_type)
    backbone, head_map = preset.weights(cfg, head)
    prefix = preset.prefix + "." if preset.prefix and head != "base" else ""
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, torch.Tensor] = {}
    for ours, param in [*model.named_parameters(), *dequantized_weights(model)]:  # tied parameters appear once
        value = param.detach().float().cpu()
        if ours in backbone:
            theirs = backbone[ours]
            pre = prefix
        elif ours in head_map:
            theirs, pre = head_map[ours], ""
        else:
            raise AssertionError(f"the {cfg.model_type} weight map has no entry for {ours}")
        if isinstance(theirs, FirstOf):
            # A table tied under several names: stored once, under its first name. With untied
            # word embeddings transformers does not tie these names again, so each is written
            # (a name that is another table's first, or already written, keeps that table).
            untied = theirs.aliases == "always" or (not cfg.tie_word_embeddings and theirs.fn is None and theirs.aliases)
            names = theirs.names if untied else theirs.names[:1]
            for name in names[1:]:
                aliases.setdefault(pre + name, value)
            theirs = Derived(theirs.names[:1], theirs.fn) if theirs.fn is not None else theirs.names[0]
        if isinstance(theirs, Derived):
            if len(theirs.names) != 1:
                raise AssertionError(f"cannot invert {ours}: derived from several tensors")
            out[pre + theirs.names[0]] = _inverse(theirs, value)
        elif isinstance(theirs, str):
            out[pre + theirs] = value
        else:
            # The sizes of the parts: the attention module's (q, k, v) split, else equal.
            owner = ours.rsplit(".", 2)[0]
            sizes = list(getattr(model.get_submodule(owner), "split", ()))
            if len(sizes) != len(theirs) or sum(sizes) != value.shape[0]:
                sizes = [value.shape[0] // len(theirs)] * len(theirs)
            for name, part in zip(theirs, value.split(sizes, dim=0)):
                out[pre + name] = part
    for name, value in aliases.items():
        out.setdefault(name, value)
    if cfg.is_encoder_decoder and cfg.position_embedding == "sinusoidal" and not cfg.positions_stored:
        # Marian and Pegasus compute their tables, but transformers keeps them as weights.
        # (computed in float64 and rounded, as transformers computes them: the same to the bit).
        table = sinusoidal_positions(torch.arange(cfg.max_positions), cfg.hidden_size, "concat", float64=True)
        for stack in ("encoder", "decoder"):
            out[prefix + f"{stack}.embed_positions.weight"] = table
    if preset.buffers is not None:
        out.update({prefix + name: value for name, value in preset.buffers(cfg).items()})
    return {k: v.contiguous().clone() for k, v in out.items()}


def save_model(model, folder: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> Path:
    """Write ``model`` (an ``LmatlasModel``) as a Hugging Face folder: config.json,
    model.safetensors, generation_config.json when the model has one, and the tokenizer files
    copied from the folder ``tokenizer``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = hf_config(model.config, model.head_name)
    state = hf_state_dict(model)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _write_json(folder / "config.json", config)
    if model.config.generation:
        _write_json(folder / "generation_config.json", model.config.generation)
    if tokenizer is not None:
        copy_tokenizer(tokenizer, folder)
    return folder


def copy_tokenizer(source: str | os.PathLike, folder: str | os.PathLike) -> None:
    source, folder = Path(source), Path(folder)
    if source.resolve() == folder.resolve():
        return
    found = False
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
            found = True
    if not found:
        raise LmatlasError(f"{source}: no tokenizer files to copy")


def save_tokenizer(tokenizer, folder: str | os.PathLike) -> None:
    """Write an lmatlas ``Tokenizer`` (one read from a GGUF file, which has no files to copy) as
    ``tokenizer.json`` and ``tokenizer_config.json``: its whole pipeline, special tokens and
    chat template."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    config |= {attr: token for attr, token in tokenizer.special_tokens_map.items()}
    if tokenizer.chat_template:
        config["chat_template"] = tokenizer.chat_template
    _write_json(folder / "tokenizer_config.json", config)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


__all__ = ["architecture_name", "as_saved", "copy_tokenizer", "hf_config", "hf_state_dict", "save_model", "save_tokenizer"]
