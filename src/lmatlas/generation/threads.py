"""The thread count of the one-token decoding steps."""

from __future__ import annotations

import math

import torch

from .. import kernels


class _StepThreads:
    """How many threads the one-token decoding steps use.

    A decoding step reads every weight once for a few rows, so it is bound by memory, and each of
    its many small operations pays the fork and join of a parallel region. On a busy machine that
    cost dominates (a parallel region waits a whole time slice for a thread that lost its core to
    another process; steps then take ten times longer), while on an idle one a second thread
    still adds bandwidth. So the steps use no more threads than the cores other runnable
    processes leave free, looked up every few steps (``kernels.runnable_elsewhere``, a tenth of
    a millisecond); where that cannot be known, the first steps alternate between the caller's
    thread count and one and the rest use the faster. ``LMATLAS_DECODE_THREADS=n`` fixes the
    count. Prompts and sources run with the caller's setting, which ``restore`` puts back.
    (Changing the setting rebuilds torch's thread pool, so it changes only when the choice does.)
    """

    TRIALS = 2  # timed steps per setting, without /proc
    EVERY = 4  # steps between looks at the machine's load

    def __init__(self):
        import os
        import time

        self._clock = time.perf_counter
        self.full = torch.get_num_threads()
        try:
            self.cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cores = os.cpu_count() or 1
        fixed = os.environ.get("LMATLAS_DECODE_THREADS", "")
        self.fixed = int(fixed) if fixed.isdigit() and int(fixed) > 0 else None
        self.steps = 0
        self.calm = 0
        self.by_load = self.full > 1 and self.fixed is None and kernels.runnable_elsewhere() is not None
        plan = [self.full, 1] * self.TRIALS
        self.plan = plan if self.full > 1 and self.fixed is None and not self.by_load else []
        self.best: dict[int, float] = {}
        self.chosen: int | None = self.fixed if self.fixed is not None else (
            None if self.plan or self.by_load else self.full)

    def _by_load(self) -> int:
        others = kernels.runnable_elsewhere()
        want = self.full if others is None else max(1, min(self.full, self.cores - others))
        current = self.chosen or self.full
        # Back up to more threads only after two calm looks in a row: others' jobs come and go.
        if want > current:
            self.calm += 1
            if self.calm < 2:
                return current
        self.calm = 0
        return want

    def run(self, fn):
        if self.by_load:
            if self.steps % self.EVERY == 0:
                self.chosen = self._by_load()
            self.steps += 1
        if self.chosen is not None:
            if torch.get_num_threads() != self.chosen:
                torch.set_num_threads(self.chosen)
            return fn()
        n = self.plan.pop(0)
        torch.set_num_threads(n)
        start = self._clock()
        out = fn()
        self.best[n] = min(self.best.get(n, math.inf), self._clock() - start)
        if not self.plan:
            self.chosen = min(self.best, key=lambda k: (self.best[k], -k))
        return out

    def restore(self) -> None:
        if torch.get_num_threads() != self.full:
            torch.set_num_threads(self.full)

