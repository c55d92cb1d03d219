"""The catalogue of landmark models, and the architecture presets, read from data.

``models.toml`` lists every model the project notes name: year, organisation, paper,
architecture, size, training data, a summary, whether the weights are open, and how lmatlas
runs it. ``architectures.toml`` holds the shapes of the models as ``ModelConfig`` values, the
closed giants included, so that lmatlas can count and estimate them and build any of them at a
reduced size for training.

This package only reads and queries that data; ``lmatlas.estimate`` does the arithmetic.
"""

from __future__ import annotations

from .entries import ARCHITECTURES, LmatlasRef, Model, Paper, find, lookup, models, normalise, suggest
from .numbers import format_count, parse_quantity
from .query import SORT_KEYS, normalise_architecture, parse_years, search
from .shapes import (
    EXTRA_DEFAULTS,
    ArchitecturePreset,
    architecture,
    architecture_key,
    architecture_names,
    architecture_preset,
)

__all__ = [
    "ARCHITECTURES",
    "EXTRA_DEFAULTS",
    "ArchitecturePreset",
    "LmatlasRef",
    "Model",
    "Paper",
    "SORT_KEYS",
    "architecture",
    "architecture_key",
    "architecture_names",
    "architecture_preset",
    "find",
    "format_count",
    "lookup",
    "models",
    "normalise",
    "parse_quantity",
    "normalise_architecture",
    "parse_years",
    "search",
    "suggest",
]
