"""What ``lmatlas estimate`` is asked about — a checkpoint folder, a catalogue entry or an
architecture preset — resolved into a parameter count and, where one is known, a shape."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import (
    ArchitecturePreset,
    Model,
    architecture_key,
    architecture_names,
    architecture_preset,
    lookup,
    models,
    suggest,
)
from ..errors import LmatlasError
from .counting import count_params
from .folder import folder_params, folder_shape


@dataclass
class Target:
    name: str
    source: str  # "preset", "catalogue" or "folder"
    shape: ArchitecturePreset | None  # None: a catalogue entry known only by its size
    model: Model | None  # the catalogue entry, if the target is one
    params: int
    params_exact: bool = False  # counted from weight files (a folder), not from the shape
    published_params: int | None = None
    notes: list[str] = field(default_factory=list)


def resolve(target: str) -> Target:
    """The folder, catalogue name or preset name ``target`` (a path must be a local folder)."""
    path = Path(target).expanduser()
    if path.is_dir():
        return _folder(path)
    if path.exists():
        raise LmatlasError(f"{target}: not a folder; give the model's folder (with config.json), not a file")
    if os.sep in target or "/" in target or target.startswith((".", "~")):
        raise LmatlasError(f"{target}: no such folder (estimate reads local checkpoint folders; it does not download)")
    # A name as the catalogue writes it ("GPT-2") is the catalogue's model; a preset's key
    # ("gpt2") is that size; anything else is looked up loosely in the catalogue ("gpt 3").
    exact = [m for m in models() if target in m.names]
    key = architecture_key(target)
    if not exact and key is not None:
        shape = architecture_preset(key)
        params = count_params(shape).total
        return Target(shape.name, "preset", shape, None, params, published_params=shape.published_params)
    model = exact[0] if exact else lookup(target)
    if model is None:
        hint = suggest(target, [n for m in models() for n in m.names] + architecture_names())
        raise LmatlasError(
            f"no model or preset called {target!r}"
            + (f"; did you mean {hint}?" if hint else "; `lmatlas catalog` lists the models")
        )
    return _catalogue(model)


def _folder(folder: Path) -> Target:
    params = folder_params(folder)  # first: a folder without weights is no model
    shape, notes = folder_shape(folder)
    return Target(folder.name, "folder", shape, None, params, params_exact=True, notes=notes)


def _catalogue(model: Model) -> Target:
    arch = model.lmatlas.architectures if model.lmatlas else ()
    if arch:
        shape = architecture_preset(arch[0])
        return Target(model.name, "catalogue", shape, model, count_params(shape).total, published_params=model.params)
    if model.params is None:
        raise LmatlasError(f"{model.name}: the catalogue has no parameter count, so there is nothing to estimate")
    notes = ["no architecture preset: FLOPs are 2 per parameter, without attention; no KV cache figure"]
    if "mixture-of-experts" in (model.architecture_note or ""):
        notes.append("a mixture-of-experts model: each token uses only some experts, so FLOPs are overstated")
    return Target(model.name, "catalogue", None, model, int(model.params), published_params=model.params, notes=notes)
