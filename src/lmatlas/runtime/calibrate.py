"""Choosing among kernels that compute the same thing, by timing them on this CPU, once.

Which of several kernels is fastest for a shape depends on the machine: its vector width, its
caches, its memory bandwidth, how well MKL and oneDNN suit it. A constant tuned on one CPU is
wrong on the next (a matrix-vector product that beats MKL on one server loses to it on another).
So where several candidates exist (``runtime.linear``: the one-row product, the few rows of a
batched or beam decode), the first use of a shape times each candidate and keeps the fastest:

- on weights of the same width and dtype that do not stay in the caches, as a decode streams
  every weight once per step: enough copies to stream ``WORKING_SET`` bytes (``test_shape``),
  flushed from every cache level before each pass (``native.evict``: a server's last-level cache
  can hold hundreds of megabytes, and a kernel timed there is timed on the cache, not on the
  memory a decode reads); each candidate timed over ``ROUNDS`` passes interleaved with the
  others', the median pass kept;
- at the thread count the call runs on (it is part of the key);
- stored in a JSON file per CPU beside the compiled kernels (``$LMATLAS_CACHE/kernels``; the
  file is named by a hash of the CPU's model name and instruction-set flags, torch's version and
  the kernels' sources), with every candidate's time, so that later processes read the choice
  instead of timing, and a reader can see why it was made.

A candidate that raises is left out; with none left, the caller's fallback is taken.
``LMATLAS_KERNEL_CHOICE=kind=name[,kind=name]`` forces a choice for a kind (for tests and for
comparing kernels); delete the file to measure again (on a machine that was busy when it was
written, for instance).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import LmatlasError
from . import native

ENV = "LMATLAS_KERNEL_CHOICE"
ROUNDS = 5
WORKING_SET = 64 << 20  # bytes streamed per pass: far beyond any core's L2
MAX_COPIES = 16

_lock = threading.Lock()
_choices: dict[str, str] | None = None  # key -> name, this CPU's file as read or written
_clock = time.perf_counter


def cpu_key() -> str:
    """What a choice depends on besides the shape: the CPU, torch, and the kernels' sources."""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    sources = b"\0".join(path.read_bytes() for path in native._SOURCES + native._HEADERS)
    parts = [model.encode(), native._cpu_flags().encode(), torch.__version__.encode(), sources]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def path() -> Path:
    return native._cache_dir() / f"choices-{cpu_key()}.json"


def forced(kind: str, names: tuple[str, ...]) -> str | None:
    """The choice ``LMATLAS_KERNEL_CHOICE`` makes for ``kind`` (one of ``names``), if any."""
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return None
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise LmatlasError(f"{ENV} must read kind=name[,kind=name], not {spec!r}")
        if name.strip() == kind:
            if value.strip() not in names:
                raise LmatlasError(f"{ENV} names {value.strip()!r} for {kind}, which is none of its kernels "
                                   f"({', '.join(names)})")
            return value.strip()
    return None


def _read() -> dict[str, dict]:
    try:
        data = json.loads(path().read_text())
        return data["choices"] if isinstance(data.get("choices"), dict) else {}
    except (OSError, ValueError, AttributeError, KeyError):
        return {}  # none yet, or unreadable: measured again and rewritten


def _write(key: str, entry: dict) -> None:
    target = path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Merge with what other processes wrote meanwhile; write beside and rename.
        choices = _read()
        choices[key] = entry
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=target.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"cpu": _model_name(), "torch": torch.__version__, "choices": choices}, f, indent=1, sort_keys=True)
        os.replace(tmp, target)
    except OSError:
        pass  # a read-only cache: the choice holds for this process only


def _model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("model name")), "")
        return line.split(":", 1)[1].strip() if line else ""
    except OSError:
        return ""


def measure(candidates: dict[str, Callable[[int], object]], copies: int,
            cold: Sequence[torch.Tensor] = ()) -> dict[str, float]:
    """Seconds per call of each candidate (``run(i)`` works on copy ``i``): one warm pass over
    the copies (compilation, packing), then ``ROUNDS`` timed passes, interleaved so that a change
    in the machine's load falls on every candidate, each pass after ``cold`` (the tensors the
    candidates read) is flushed from the caches; the median pass. Candidates that raise are left
    out."""
    alive = {}
    for name, run in candidates.items():
        try:
            for i in range(copies):
                run(i)
        except Exception:  # a kernel that cannot run here (no compiler, no oneDNN...)
            continue
        alive[name] = run
    passes: dict[str, list[float]] = {name: [] for name in alive}
    for _ in range(ROUNDS):
        for name, run in alive.items():
            native.evict(cold)
            start = _clock()
            for i in range(copies):
                run(i)
            passes[name].append((_clock() - start) / copies)
    return {name: statistics.median(times) for name, times in passes.items()}


def choose(kind: str, shape: str, candidates: Callable[[], tuple[dict[str, Callable[[int], object]], int]],
           names: tuple[str, ...]) -> str:
    """The kernel for ``kind`` at ``shape`` (a string naming what matters: dtype, sizes, rows)
    on the calling thread count: forced, stored, or measured now over ``candidates()`` (which
    makes the test weights: a dict of runners, named from ``names``, how many copies they cycle
    through, and optionally the tensors they read, flushed from the caches before each timed
    pass). ``names[0]`` is the fallback, where no candidate runs."""
    name = forced(kind, names)
    if name is not None:
        return name
    global _choices
    key = f"{kind}/{shape}/threads={torch.get_num_threads()}"
    with _lock:
        if _choices is None:
            _choices = {k: v["choice"] for k, v in _read().items() if isinstance(v, dict) and "choice" in v}
        name = _choices.get(key)
        if name in names:
            return name
        # The test weights are drawn from PyTorch's generator: its state is put back after, so that
        # a seeded sampling gives the same tokens whether or not its decode measured a kernel.
        with torch.random.fork_rng(devices=[]):
            runners, copies, *cold = candidates()
            if len(runners) == 1:
                return next(iter(runners))  # nothing to choose between: not stored, not timed
            times = measure(runners, copies, *cold)
            del runners, cold
        name = min(times, key=times.get) if times else names[0]
        _choices[key] = name
        _write(key, {"choice": name, "us": {k: round(v * 1e6, 2) for k, v in sorted(times.items())}})
        return name


def test_shape(rows: int, row_bytes: int) -> tuple[int, int]:
    """The rows of a test weight standing for one of ``rows`` rows of ``row_bytes``, and how
    many copies a pass streams: ``WORKING_SET`` bytes in all, in at least two copies and at most
    ``MAX_COPIES``. A larger weight is timed on its first ``WORKING_SET / 2`` bytes of rows (each
    row costs the same), so that timing a model's largest matrix (an LM head) with its
    candidates' own copies does not take several times its size."""
    rows = max(1, min(rows, WORKING_SET // 2 // max(row_bytes, 1)))
    return rows, max(2, min(MAX_COPIES, -(-WORKING_SET // (rows * max(row_bytes, 1)))))


def forget() -> None:
    """Drop the choices read in this process (the file is read again at the next use)."""
    global _choices
    with _lock:
        _choices = None


__all__ = ["ENV", "choose", "cpu_key", "forced", "forget", "measure", "path", "test_shape"]
