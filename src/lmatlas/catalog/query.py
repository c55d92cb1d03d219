"""Choosing entries: filters by architecture, year, size and openness, and the sort orders."""

from __future__ import annotations

import re

from ..errors import LmatlasError
from .entries import ARCHITECTURES, Model, _models, normalise
from .numbers import parse_quantity

SORT_KEYS = ("year", "name", "params", "tokens", "organisation")


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
