"""This machine's memory bandwidth, measured, or a figure a person writes ("25GB/s").

A decoder reads every weight once per generated token, so the bandwidth bounds how fast it can
decode. ``lmatlas estimate`` measures it unless it is given; the library's ``estimate`` only
takes it as a number.
"""

from __future__ import annotations

import functools
import math
import time

from ..errors import LmatlasError

_UNITS = {"tb/s": 1e12, "gb/s": 1e9, "mb/s": 1e6, "tib/s": 2**40, "gib/s": 2**30, "mib/s": 2**20}


@functools.cache
def measure_bandwidth() -> float:
    """Bytes per second this machine reads from memory: the best of a few sums over 128 MiB.

    About 0.1-0.2 s, once per process.
    """
    import torch

    x = torch.ones(32 * 2**20, dtype=torch.float32)  # 128 MiB, written once so pages are real
    best = math.inf
    for _ in range(6):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * x.element_size() / best


def parse_bandwidth(text: str | float) -> float:
    """"25" or "25GB/s" -> 25e9 bytes/s; also MB/s, GiB/s, TB/s. A bare number is GB/s."""
    if isinstance(text, (int, float)):
        value = float(text) * 1e9
    else:
        s = str(text).strip().lower().replace(" ", "")
        scale = 1e9
        for unit, factor in _UNITS.items():
            if s.endswith(unit):
                s, scale = s[: -len(unit)], factor
                break
        try:
            value = float(s) * scale
        except ValueError:
            raise LmatlasError(f"--bandwidth must be a number of GB/s such as 25 or 25GB/s, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise LmatlasError(f"--bandwidth must be positive, not {text!r}")
    return value
