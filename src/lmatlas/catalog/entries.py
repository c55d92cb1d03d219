"""The catalogue's entries: ``models.toml`` read, checked, and looked up by name or alias."""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable

import tomllib

from ..errors import LmatlasError

ARCHITECTURES = ("encoder", "decoder", "encoder-decoder", "other")
WEIGHTS = ("open", "closed")

_MODEL_KEYS = {
    "name", "aliases", "year", "organisation", "paper", "homepage", "architecture",
    "architecture_note", "modality", "params", "training_tokens", "training_data", "summary",
    "weights", "lmatlas",
}
_REQUIRED_MODEL_KEYS = {"name", "year", "organisation", "paper", "architecture", "summary", "weights"}
_LMATLAS_KEYS = {"preset", "checkpoints", "stand_in", "architectures"}


@dataclass(frozen=True)
class Paper:
    title: str
    url: str


@dataclass(frozen=True)
class LmatlasRef:
    """How lmatlas runs a model: a runtime preset and checkpoints, and its config presets."""

    preset: str | None = None
    checkpoints: tuple[str, ...] = ()
    stand_in: str | None = None
    architectures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Model:
    name: str
    year: int
    organisation: str
    paper: Paper
    architecture: str
    summary: str
    weights: str
    aliases: tuple[str, ...] = ()
    homepage: str | None = None
    architecture_note: str | None = None
    modality: str = "text"
    params: int | None = None
    training_tokens: int | None = None
    training_data: str | None = None
    lmatlas: LmatlasRef | None = None

    @property
    def is_open(self) -> bool:
        return self.weights == "open"

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def to_dict(self) -> dict[str, Any]:
        """The entry as plain JSON types; absent figures are null."""
        lm = self.lmatlas
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "year": self.year,
            "organisation": self.organisation,
            "paper": {"title": self.paper.title, "url": self.paper.url},
            "homepage": self.homepage,
            "architecture": self.architecture,
            "architecture_note": self.architecture_note,
            "modality": self.modality,
            "params": self.params,
            "training_tokens": self.training_tokens,
            "training_data": self.training_data,
            "summary": self.summary,
            "weights": self.weights,
            "lmatlas": None
            if lm is None
            else {
                "preset": lm.preset,
                "checkpoints": list(lm.checkpoints),
                "stand_in": lm.stand_in,
                "architectures": list(lm.architectures),
            },
        }


def read_toml(filename: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")
    return tomllib.loads(text)


def _model_from_toml(raw: dict[str, Any]) -> Model:
    name = raw.get("name", "?")
    unknown = set(raw) - _MODEL_KEYS
    missing = _REQUIRED_MODEL_KEYS - set(raw)
    if unknown or missing:
        raise ValueError(f"models.toml, {name}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    if raw["architecture"] not in ARCHITECTURES:
        raise ValueError(f"models.toml, {name}: architecture must be one of {ARCHITECTURES}")
    if raw["weights"] not in WEIGHTS:
        raise ValueError(f"models.toml, {name}: weights must be one of {WEIGHTS}")
    lm = raw.get("lmatlas")
    ref = None
    if lm is not None:
        if set(lm) - _LMATLAS_KEYS:
            raise ValueError(f"models.toml, {name}: unknown lmatlas keys {sorted(set(lm) - _LMATLAS_KEYS)}")
        ref = LmatlasRef(
            preset=lm.get("preset"),
            checkpoints=tuple(lm.get("checkpoints", ())),
            stand_in=lm.get("stand_in"),
            architectures=tuple(lm.get("architectures", ())),
        )
    return Model(
        name=name,
        aliases=tuple(raw.get("aliases", ())),
        year=int(raw["year"]),
        organisation=raw["organisation"],
        paper=Paper(**raw["paper"]),
        homepage=raw.get("homepage"),
        architecture=raw["architecture"],
        architecture_note=raw.get("architecture_note"),
        modality=raw.get("modality", "text"),
        params=raw.get("params"),
        training_tokens=raw.get("training_tokens"),
        training_data=raw.get("training_data"),
        summary=raw["summary"],
        weights=raw["weights"],
        lmatlas=ref,
    )


@functools.cache
def _models() -> tuple[Model, ...]:
    return tuple(_model_from_toml(raw) for raw in read_toml("models.toml")["model"])


def models() -> list[Model]:
    """Every catalogue entry, in the file's order (by year)."""
    return list(_models())


def normalise(name: str) -> str:
    """The lookup key of a name: lower case, letters and digits only ("GPT-3" -> "gpt3")."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


@functools.cache
def _index() -> dict[str, Model]:
    table: dict[str, Model] = {}
    for model in _models():
        for alias in model.names:
            key = normalise(alias)
            if key in table and table[key] is not model:
                raise ValueError(f"models.toml: {alias!r} names both {table[key].name} and {model.name}")
            table[key] = model
    return table


def suggest(name: str, candidates: Iterable[str]) -> str:
    """Up to three of ``candidates`` close to ``name``, for a "did you mean" (empty if none)."""
    candidates = list(dict.fromkeys(candidates))
    by_key: dict[str, str] = {}
    for c in candidates:
        by_key.setdefault(normalise(c), c)
    close = difflib.get_close_matches(normalise(name), list(by_key), n=3, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        return ", ".join(close)
    return ", ".join(by_key[k] for k in close)


def lookup(name: str) -> Model | None:
    """The entry called ``name`` or one of its aliases (ignoring case, spaces, hyphens), or None."""
    return _index().get(normalise(name))


def find(name: str) -> Model:
    """Like ``lookup``, but a user's unknown name is an error that suggests close matches."""
    model = lookup(name)
    if model is None:
        hint = suggest(name, [n for m in _models() for n in m.names])
        raise LmatlasError(
            f"no model called {name!r} in the catalogue"
            + (f"; did you mean {hint}?" if hint else "; `lmatlas catalog` lists them")
        )
    return model
