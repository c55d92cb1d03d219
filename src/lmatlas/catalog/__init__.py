"""The catalogue of landmark models, and the architecture presets, read from data.

``models.toml`` lists every model the project notes name: year, organisation, paper,
architecture, size, training data, a summary, whether the weights are open, and how lmatlas
runs it. ``architectures.toml`` holds the shapes of the models as ``ModelConfig`` values, the
closed giants included, so that lmatlas can count and estimate them and build any of them at a
reduced size for training.

This module only reads and queries that data; ``lmatlas.estimate`` does the arithmetic.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterable

from ..config import ModelConfig
from ..errors import LmatlasError

import tomllib

ARCHITECTURES = ("encoder", "decoder", "encoder-decoder", "other")
WEIGHTS = ("open", "closed")
SKELETONS = ("encoder", "decoder", "encoder-decoder")
SORT_KEYS = ("year", "name", "params", "tokens", "organisation")

_MODEL_KEYS = {
    "name", "aliases", "year", "organisation", "paper", "homepage", "architecture",
    "architecture_note", "modality", "params", "training_tokens", "training_data", "summary",
    "weights", "lmatlas",
}
_REQUIRED_MODEL_KEYS = {"name", "year", "organisation", "paper", "architecture", "summary", "weights"}
_LMATLAS_KEYS = {"preset", "checkpoints", "stand_in", "architectures"}

# Keys of an architecture preset that describe the preset rather than the shape. Only `model`
# passes down to presets built on a base: the others belong to one size.
_META_KEYS = {"model", "source", "published_params", "checkpoint_params", "base", "notes"}
# Shape facts ModelConfig has no field for (see the header of architectures.toml).
EXTRA_DEFAULTS: dict[str, Any] = {
    "skeleton": None,
    "num_decoder_layers": None,
    "relative_attention": "buckets",
    "relative_attention_num_buckets": 32,
    "attention_pattern": None,
}
_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
# Optional string fields, which an empty string in TOML sets to None.
_OPTIONAL_STR = {"pooler_activation", "classifier_activation", "problem_type"}


# --------------------------------------------------------------------------------------------
# Numbers people write: "1.4T", "350M", "2e9", "1_000".
# --------------------------------------------------------------------------------------------

_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_quantity(text: str | int | float, what: str = "number") -> float:
    """``"1.4T"`` -> 1.4e12; suffixes k, M, B (or G), T; plain and scientific numbers too."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().replace("_", "").replace(",", "")
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)", s, flags=re.IGNORECASE)
        if not m:
            raise LmatlasError(f"{what} must be a number such as 350M, 1.4T or 2e9, not {str(text)!r}")
        value = float(m.group(1)) * _SUFFIXES[m.group(2).lower()]
    if not math.isfinite(value) or value < 0:
        raise LmatlasError(f"{what} must be a non-negative number, not {text!r}")
    return value


def format_count(n: float | None, digits: int = 3) -> str:
    """175e9 -> '175B', 1.4e12 -> '1.4T', 66e6 -> '66M'; None -> '-'."""
    if n is None:
        return "-"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            text = f"{n / scale:.{digits}g}"
            return f"{text}{unit}"
    return f"{n:.{digits}g}"


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


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


def _read_toml(filename: str) -> dict[str, Any]:
    text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
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
    return tuple(_model_from_toml(raw) for raw in _read_toml("models.toml")["model"])


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


def _suggest(name: str, candidates: Iterable[str]) -> str:
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
        hint = _suggest(name, [n for m in _models() for n in m.names])
        raise LmatlasError(
            f"no model called {name!r} in the catalogue"
            + (f"; did you mean {hint}?" if hint else "; `lmatlas catalog` lists them")
        )
    return model


def parse_years(text: str) -> tuple[int, int]:
    """``"2019"`` -> (2019, 2019); ``"2019-2021"``, ``"2020-"`` and ``"-2019"`` are ranges."""
    m = re.fullmatch(r"\s*(\d{4})?\s*(-)?\s*(\d{4})?\s*", str(text))
    if not m or not (m.group(1) or m.group(3)) or (m.group(1) and m.group(3) and not m.group(2)):
        raise LmatlasError(f"--year must be a year or a range such as 2019-2021 or 2020-, not {text!r}")
    lo = int(m.group(1)) if m.group(1) else 0
    hi = int(m.group(3)) if m.group(3) else (9999 if m.group(2) else lo)
    if lo > hi:
        raise LmatlasError(f"--year range {text!r} is empty: {lo} comes after {hi}")
    return lo, hi


def normalise_architecture(text: str) -> str:
    """"encoder-only", "decoder only", "seq2seq" and friends -> one of ``ARCHITECTURES``."""
    key = normalise(text)
    table = {
        "encoder": "encoder", "encoderonly": "encoder", "autoencoding": "encoder",
        "decoder": "decoder", "decoderonly": "decoder", "causal": "decoder", "autoregressive": "decoder",
        "encoderdecoder": "encoder-decoder", "seq2seq": "encoder-decoder",
        "sequencetosequence": "encoder-decoder", "other": "other",
    }
    if key not in table:
        raise LmatlasError(f"--arch must be one of {', '.join(ARCHITECTURES)}, not {text!r}")
    return table[key]


def search(
    arch: str | None = None,
    year: str | tuple[int, int] | None = None,
    min_params: str | float | None = None,
    max_params: str | float | None = None,
    open_only: bool = False,
    sort: str = "year",
    reverse: bool = False,
) -> list[Model]:
    """Entries matching every filter given. A size filter drops entries of unknown size."""
    if sort not in SORT_KEYS:
        raise LmatlasError(f"--sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
    arch = normalise_architecture(arch) if arch else None
    years = parse_years(year) if isinstance(year, str) else year
    lo = parse_quantity(min_params, "--min-params") if min_params is not None else None
    hi = parse_quantity(max_params, "--max-params") if max_params is not None else None
    chosen = []
    for m in _models():
        if arch and m.architecture != arch:
            continue
        if years and not years[0] <= m.year <= years[1]:
            continue
        if lo is not None and (m.params is None or m.params < lo):
            continue
        if hi is not None and (m.params is None or m.params > hi):
            continue
        if open_only and not m.is_open:
            continue
        chosen.append(m)

    def key(m: Model) -> tuple:
        # Unknown sizes sort last whichever way the sort goes.
        if sort == "params":
            return (m.params is None, (m.params or 0) * (-1 if reverse else 1), m.year)
        if sort == "tokens":
            return (m.training_tokens is None, (m.training_tokens or 0) * (-1 if reverse else 1), m.year)
        if sort == "name":
            return (m.name.lower(),)
        if sort == "organisation":
            return (m.organisation.lower(), m.year)
        return (m.year, m.params or 0)

    chosen.sort(key=key)
    if reverse and sort not in ("params", "tokens"):
        chosen.reverse()
    return chosen


# --------------------------------------------------------------------------------------------
# Architecture presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchitecturePreset:
    """A model's shape: a ModelConfig, plus the facts ModelConfig has no field for."""

    name: str
    model: str | None
    config: ModelConfig
    extra: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    published_params: int | None = None
    checkpoint_params: int | None = None
    notes: str | None = None

    @property
    def skeleton(self) -> str:
        return self.extra["skeleton"]

    @property
    def num_decoder_layers(self) -> int:
        """Layers that decode (and keep a key/value cache): the decoder's, or all of a decoder's."""
        if self.skeleton == "encoder-decoder":
            return self.extra["num_decoder_layers"]
        return self.config.num_layers


@functools.cache
def _raw_architectures() -> dict[str, dict[str, Any]]:
    return _read_toml("architectures.toml")


def _flatten(name: str, raw: dict[str, dict[str, Any]], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name in seen:
        raise ValueError(f"architectures.toml: {name} inherits from itself")
    own = dict(raw[name])
    base = own.pop("base", None)
    if base is None:
        return own
    if base not in raw:
        raise ValueError(f"architectures.toml, {name}: unknown base {base!r}")
    merged = {k: v for k, v in _flatten(base, raw, seen + (name,)).items() if k not in _META_KEYS - {"model"}}
    merged.update(own)
    return merged


def architecture_names() -> list[str]:
    return list(_raw_architectures())


def _find_architecture_key(name: str) -> str | None:
    raw = _raw_architectures()
    if name in raw:
        return name
    for key in raw:
        if normalise(key) == normalise(name):
            return key
    return None


def _adapt(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply overrides, keeping the preset's proportions where the caller left them open.

    Shrinking ``hidden_size`` scales the MLP width with it; changing the width or the heads
    re-derives the head size unless it is given; grouped key/value heads keep their ratio; an
    embedding scale of sqrt(hidden_size) (CTRL's) stays the root of the new width.
    """
    out = dict(values)
    out.update(overrides)
    hidden0, heads0 = values["hidden_size"], values["num_heads"]
    hidden, heads = out["hidden_size"], out["num_heads"]
    if "intermediate_size" not in overrides and hidden != hidden0:
        out["intermediate_size"] = max(1, round(values["intermediate_size"] * hidden / hidden0))
    if "embedding_size" not in overrides and values.get("embedding_size") in (None, hidden0):
        out.pop("embedding_size", None)
    if "embedding_scale" not in overrides and values.get("embedding_scale") == math.sqrt(hidden0):
        out["embedding_scale"] = math.sqrt(hidden)
    if "head_dim" not in overrides and (hidden != hidden0 or heads != heads0):
        out.pop("head_dim", None)
        if hidden % heads:
            raise LmatlasError(f"hidden_size {hidden} is not a multiple of num_heads {heads}; give head_dim too")
    if "num_kv_heads" not in overrides and heads != heads0 and values.get("num_kv_heads") not in (None, heads0):
        kv0 = values["num_kv_heads"]
        kv, rest = divmod(heads * kv0, heads0)
        out["num_kv_heads"] = kv if kv >= 1 and not rest and heads % kv == 0 else math.gcd(kv0, heads)
    if "num_decoder_layers" not in overrides and "num_layers" in overrides:
        if values.get("num_decoder_layers") in (None, values["num_layers"]):
            out.pop("num_decoder_layers", None)
    return out


def architecture_preset(name: str, **overrides: Any) -> ArchitecturePreset:
    """The preset called ``name`` (see ``architecture_names()``), optionally changed.

    Overrides take ModelConfig field names and the extra shape keys (``num_decoder_layers``…);
    use them to build a model of the same design at a size that trains on a laptop.
    """
    key = _find_architecture_key(name)
    if key is None:
        hint = _suggest(name, architecture_names())
        raise LmatlasError(
            f"no architecture preset called {name!r}" + (f"; did you mean {hint}?" if hint else "")
        )
    values = _flatten(key, _raw_architectures())
    meta = {k: values.pop(k) for k in list(values) if k in _META_KEYS}
    unknown = set(values) - set(_CONFIG_FIELDS) - set(EXTRA_DEFAULTS)
    if unknown:
        raise ValueError(f"architectures.toml, {key}: unknown keys {sorted(unknown)}")
    bad = set(overrides) - set(_CONFIG_FIELDS) - set(EXTRA_DEFAULTS)
    if bad:
        field_names = [*_CONFIG_FIELDS, *EXTRA_DEFAULTS]
        hints = {b: _suggest(b, field_names) for b in sorted(bad)}
        raise LmatlasError(
            "unknown architecture field "
            + ", ".join(f"{b!r}" + (f" (did you mean {h}?)" if h else "") for b, h in hints.items())
        )
    values = _adapt(values, overrides)
    for k in _OPTIONAL_STR:
        if values.get(k) == "":
            values[k] = None
    extra = dict(EXTRA_DEFAULTS)
    extra.update({k: values.pop(k) for k in list(values) if k in EXTRA_DEFAULTS})
    pattern = extra["attention_pattern"]
    if pattern and "attention_layers" not in overrides:
        values["attention_layers"] = [pattern[i % len(pattern)] for i in range(values["num_layers"])]
    try:
        config = ModelConfig(**values)
    except (TypeError, ValueError) as e:
        raise LmatlasError(f"architecture {key}: {e}") from None
    if extra["skeleton"] is None:
        extra["skeleton"] = "decoder" if config.causal else "encoder"
    if extra["skeleton"] not in SKELETONS:
        raise ValueError(f"architectures.toml, {key}: skeleton must be one of {SKELETONS}")
    if extra["skeleton"] == "encoder-decoder":
        if extra["num_decoder_layers"] is None:
            extra["num_decoder_layers"] = config.num_layers
        # The model it builds is an encoder-decoder too, with the decoder at its own depth.
        config = config.replace(is_encoder_decoder=True, decoder_layers=extra["num_decoder_layers"])
    if config.position_embedding == "relative" and extra["relative_attention"] == "buckets":
        config = config.replace(relative_attention_num_buckets=extra["relative_attention_num_buckets"])
    return ArchitecturePreset(
        name=key,
        model=meta.get("model"),
        config=config,
        extra=extra,
        source=meta.get("source"),
        published_params=meta.get("published_params"),
        checkpoint_params=meta.get("checkpoint_params"),
        notes=meta.get("notes"),
    )


def architecture(name: str, **overrides: Any) -> ModelConfig:
    """The ``ModelConfig`` of an architecture preset, e.g. ``architecture("gpt3-175b",
    num_layers=4, hidden_size=256, num_heads=4)`` for a small GPT-3 to train."""
    return architecture_preset(name, **overrides).config


__all__ = [
    "ARCHITECTURES",
    "ArchitecturePreset",
    "LmatlasRef",
    "Model",
    "Paper",
    "architecture",
    "architecture_names",
    "architecture_preset",
    "find",
    "format_count",
    "lookup",
    "models",
    "normalise",
    "parse_quantity",
    "parse_years",
    "search",
]
