"""Architecture presets: the shapes of ``architectures.toml`` as ``ModelConfig`` values.

A preset may build on another (``base``) and be changed at will (``architecture_preset(name,
**overrides)``), keeping its proportions, to count it, estimate it, or train it at a reduced size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any

from ..config import ModelConfig
from ..errors import LmatlasError
from .entries import normalise, read_toml, suggest

SKELETONS = ("encoder", "decoder", "encoder-decoder")

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
    return read_toml("architectures.toml")


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


def architecture_key(name: str) -> str | None:
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
    embedding scale of sqrt(hidden_size) (CTRL's) stays the root of the new width; a vocabulary
    smaller than Transformer-XL's cutoffs keeps those below it.
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
    cuts = out.get("adaptive_cutoffs")
    if cuts and "adaptive_cutoffs" not in overrides and cuts[-1] >= out["vocab_size"]:
        # A smaller vocabulary keeps the adaptive softmax's cutoffs that fall inside it.
        out["adaptive_cutoffs"] = [c for c in cuts if c < out["vocab_size"]]
    ties = values.get("tie_projections")
    if ties and "tie_projections" not in overrides and out.get("adaptive_cutoffs") != values.get("adaptive_cutoffs"):
        # One tie per cluster, in the preset's pattern: the first cluster's, then the others'.
        out["tie_projections"] = ties[:1] + ties[1:2] * len(out["adaptive_cutoffs"])
    if "num_decoder_layers" not in overrides and "num_layers" in overrides:
        if values.get("num_decoder_layers") in (None, values["num_layers"]):
            out.pop("num_decoder_layers", None)
    return out


def architecture_preset(name: str, **overrides: Any) -> ArchitecturePreset:
    """The preset called ``name`` (see ``architecture_names()``), optionally changed.

    Overrides take ModelConfig field names and the extra shape keys (``num_decoder_layers``…);
    use them to build a model of the same design at a size that trains on a laptop.
    """
    key = architecture_key(name)
    if key is None:
        hint = suggest(name, architecture_names())
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
        hints = {b: suggest(b, field_names) for b in sorted(bad)}
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
