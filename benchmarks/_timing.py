"""Timing shared by the benchmarks: each side's best time, the two sides alternating so that a
change in the machine's load touches both alike; and the machine's memory read bandwidth now,
which bounds decoding (every step reads every weight); and this process's resident memory, to
see what a model adds."""

from __future__ import annotations

import resource
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


def report_bound(name: str, tokens_per_s: float, weight_bytes: float, bandwidth_gbs: float) -> None:
    """One line: how close a batch-1 token comes to reading every weight once at the bandwidth."""
    per_token, bound = 1 / tokens_per_s, weight_bytes / (bandwidth_gbs * 1e9)
    print(f"{name:24s} batch 1: {per_token * 1e3:6.1f} ms/token = {bound / per_token:4.0%} of the bandwidth bound "
          f"({bound * 1e3:.1f} ms to read the weights once)")


def memory_bandwidth_gbs() -> float:
    """Read bandwidth now: the fastest of a few reads of 512 MB (more than most caches), each
    flushed from the caches first, by the fastest readers known here: torch's sum (one stream
    per thread) and lmatlas' one-row kernel on a 512 MB matrix (several streams per thread,
    which a core needs to come near the memory's bandwidth)."""
    from lmatlas.runtime import native

    x = torch.ones(128 * 1024 * 1024)
    readers = [x.sum]
    path = native.gemv_path(torch.float32)
    if path is not None:
        w, v = x.view(-1, 4096), torch.ones(4096)
        readers.append(lambda: native.gemv(v, w, None, path))
    best = float("inf")
    for _ in range(5):
        for read in readers:
            native.evict([x])
            t = time.perf_counter()
            read()
            best = min(best, time.perf_counter() - t)
    return 4 * x.numel() / best / 1e9


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) of this process.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_mb()
