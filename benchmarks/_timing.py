"""Timing shared by the benchmarks: each side's best time, the two sides alternating so that a
change in the machine's load touches both alike."""

from __future__ import annotations

import time
from typing import Callable


def alternated_best(sides: dict[str, Callable[[], object]], repeats: int = 3) -> dict[str, tuple[float, object]]:
    """``{name: (best seconds, last result)}``, running the sides in turn ``repeats`` times."""
    best: dict[str, tuple[float, object]] = {name: (float("inf"), None) for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            t = time.perf_counter()
            result = fn()
            best[name] = (min(best[name][0], time.perf_counter() - t), result)
    return best
