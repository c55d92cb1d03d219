"""Timing shared by the benchmarks: each side's best time, the two sides alternating so that a
change in the machine's load touches both alike; and the machine's memory read bandwidth now,
which bounds decoding (every step reads every weight)."""

from __future__ import annotations

import time
from typing import Callable

import torch


def alternated_best(sides: dict[str, Callable[[], object]], repeats: int = 3) -> dict[str, tuple[float, object]]:
    """``{name: (best seconds, last result)}``, running the sides in turn ``repeats`` times."""
    best: dict[str, tuple[float, object]] = {name: (float("inf"), None) for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            t = time.perf_counter()
            result = fn()
            best[name] = (min(best[name][0], time.perf_counter() - t), result)
    return best


def memory_bandwidth_gbs() -> float:
    """Read bandwidth now: the best of a few sums over 512 MB (more than any cache)."""
    x = torch.ones(128 * 1024 * 1024)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    del x
    return 4 * 128 * 1024 * 1024 / best / 1e9
