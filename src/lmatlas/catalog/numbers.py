"""Numbers people write and read: "1.4T", "350M", "2e9", "1_000"."""

from __future__ import annotations

import math
import re

from ..errors import LmatlasError

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
