"""Presets: how each family's ``config.json`` and weight names map onto lmatlas' skeletons.

Each family module ends with ``PRESET``, a ``Preset`` (see ``preset.py``); ``preset_for``
finds the one that reads a ``model_type``, and the accessors below answer, for any
``model_type``, what other stages ask of its family.
"""

from __future__ import annotations

import importlib
from functools import cache

from ..errors import LmatlasError
from .preset import CLASS_SUFFIX, Preset, Skeleton

_FAMILIES = [
    "bert", "distilbert", "roberta", "albert", "electra", "ernie", "big_bird",
    "gpt", "gpt2", "ctrl", "gpt_neo", "opt", "bloom", "falcon", "llama", "qwen2",
    "transfo_xl",
    "bart", "mbart", "marian", "pegasus", "bigbird_pegasus", "t5", "switch_transformers",
    "vit", "clip", "swin", "decision_transformer", "xlnet",
]  # fmt: skip


@cache
def _registry() -> dict[str, Preset]:
    table: dict[str, Preset] = {}
    for family in _FAMILIES:
        preset = importlib.import_module(f"{__name__}.{family}").PRESET
        for model_type in preset.model_types:
            table[model_type] = preset
    return table


def model_types() -> list[str]:
    """Every ``model_type`` a preset reads, sorted."""
    return sorted(_registry())


def preset_for(model_type: str | None, source: str = "config.json") -> Preset:
    table = _registry()
    if model_type not in table:
        raise LmatlasError(f"{source}: model_type {model_type!r} is not supported; lmatlas knows {', '.join(model_types())}")
    return table[model_type]


def tokenizer_family(model_type: str | None) -> str | None:
    """The tokenizer family of ``model_type``'s checkpoints when their files name no tokenizer
    class (None for a model_type lmatlas has no preset or family for)."""
    preset = _registry().get(model_type)
    return preset.tokenizer_family_of(model_type) if preset else None


def skeleton(model_type: str | None) -> Skeleton | None:
    """The skeleton ``model_type`` is built on (None when no preset reads it)."""
    preset = _registry().get(model_type)
    return preset.skeleton if preset else None


def head_from_architectures(preset: Preset, architectures: list[str], source: str) -> str:
    """The lmatlas head for ``config.architectures[0]`` (``base`` when it names none)."""
    if not architectures:
        return "base"
    arch = architectures[0]
    # The longest suffix first: "T5EncoderModel" is the encoder alone, not the base "Model".
    for suffix, head in sorted(preset.heads.items(), key=lambda item: -len(item[0])):
        if arch.endswith(suffix):
            return head
    known = ", ".join(sorted(set(preset.heads.values())))
    raise LmatlasError(f"{source}: architecture {arch} has no lmatlas head; load it with head= one of {known}")


__all__ = [
    "CLASS_SUFFIX", "Preset", "Skeleton", "head_from_architectures", "model_types", "preset_for",
    "skeleton", "tokenizer_family",
]  # fmt: skip
