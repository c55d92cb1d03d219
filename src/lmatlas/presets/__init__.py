"""Presets: how each family's ``config.json`` and weight names map onto lmatlas' skeletons.

A preset module defines:

- ``MODEL_TYPES``: the ``model_type`` values of ``config.json`` it reads;
- ``PREFIX``: the name under which transformers' head classes store the base model's weights;
- ``HEADS``: the ``architectures`` class-name suffixes it knows, mapped to lmatlas head names;
- ``config(hf, head) -> ModelConfig``;
- ``weights(cfg, head) -> (backbone, head)``: two maps from lmatlas parameter names to the
  checkpoint's names — backbone names without ``PREFIX``, head names as stored. A tuple of
  checkpoint names is concatenated along the first dimension (the fused q/k/v projection); a
  ``_maps.Derived`` rearranges stored tensors (transposed or per-head interleaved layouts);
- optionally ``ties(cfg, head, weights, prefix) -> ModelConfig``: the ties that config.json
  leaves to the checkpoint (which tables it stores, and whether their values differ), for
  ``weights`` (a ``checkpoint.Weights``) whose backbone names start with ``prefix``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import LmatlasError

_FAMILIES = [
    "bert", "distilbert", "roberta", "albert", "electra",
    "gpt", "gpt2", "ctrl", "gpt_neo", "opt", "bloom", "falcon", "llama",
    "bart", "mbart", "marian", "pegasus", "t5",
]


def _registry() -> dict[str, ModuleType]:
    table = {}
    for family in _FAMILIES:
        module = importlib.import_module(f"{__name__}.{family}")
        for model_type in module.MODEL_TYPES:
            table[model_type] = module
    return table


def preset_for(model_type: str | None, source: str = "config.json") -> ModuleType:
    table = _registry()
    if model_type not in table:
        raise LmatlasError(
            f"{source}: model_type {model_type!r} is not supported; lmatlas knows {', '.join(sorted(table))}"
        )
    return table[model_type]


def supported_model_types() -> list[str]:
    return sorted(_registry())


def head_from_architectures(preset: ModuleType, architectures: list[str], source: str) -> str:
    """The lmatlas head for ``config.architectures[0]`` (``base`` when it names none)."""
    if not architectures:
        return "base"
    arch = architectures[0]
    for suffix, head in preset.HEADS.items():
        if arch.endswith(suffix):
            return head
    known = ", ".join(sorted(set(preset.HEADS.values())))
    raise LmatlasError(
        f"{source}: architecture {arch} has no lmatlas head; load it with head= one of {known}"
    )
