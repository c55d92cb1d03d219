"""The progress of a training run: a one-line bar on a terminal, a line every N steps otherwise."""

from __future__ import annotations

import sys
import time


def _fmt_rate(x: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def _fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """A one-line bar on a terminal; a line every ``every`` steps otherwise."""

    def __init__(self, total: int, start: int, enabled: bool, every: int):
        self.total, self.enabled, self.every = total, enabled, max(1, every)
        self.tty = enabled and sys.stderr.isatty()
        self.start_step, self.t0 = start, time.time()

    def update(self, step: int, loss: float, tokens_per_s: float, ms: float) -> None:
        if not self.enabled:
            return
        done = step - self.start_step
        eta = (time.time() - self.t0) / max(done, 1) * (self.total - step)
        text = (f"step {step}/{self.total} loss {loss:.4f} {_fmt_rate(tokens_per_s)} tok/s "
                f"{ms:.0f} ms/step eta {_fmt_time(eta)}")
        if self.tty:
            width = 20
            filled = int(width * step / self.total)
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\033[K", end="", file=sys.stderr, flush=True)
        elif step % self.every == 0 or step == self.total:
            print(text, file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        print(("\r\033[K" if self.tty else "") + text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


__all__ = ["Progress"]
