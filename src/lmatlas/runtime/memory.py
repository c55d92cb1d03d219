"""Whether the machine has room for a kernel's copy of a weight.

The batched kernels (``linear``) read each weight from a second copy in a layout of their own,
which doubles a model's memory while it decodes several rows at once. On a model that fills most
of the machine's memory that copy would push it into swap, or the process into the OOM killer,
for a gain of tens of percent; so a copy is made only if it leaves a reserve of memory
available, and otherwise the layer computes from its own weight (ATen), a little more slowly.
"""

from __future__ import annotations

import warnings

# Memory left available after a copy: this fraction of the machine's, and at least RESERVE_MIN.
RESERVE_FRACTION = 0.125
RESERVE_MIN = 512 << 20
MEMINFO = "/proc/meminfo"
# A container's limit and use (cgroup v2, then v1): the machine's free memory is not all its.
CGROUP_LIMITS = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))

_warned = False


def meminfo() -> tuple[int, int] | None:
    """(total, available) bytes of memory as Linux counts them (``MemAvailable``: free memory
    plus caches it can reclaim, which includes the pages of a memory-mapped checkpoint), within
    the process's container where it has a limit; None where that is not known."""
    try:
        with open(MEMINFO, encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        total, available = (int(fields[k].split()[0]) * 1024 for k in ("MemTotal", "MemAvailable"))
    except (OSError, KeyError, ValueError):
        return None
    for limit_file, usage_file in CGROUP_LIMITS:
        try:
            with open(limit_file, encoding="ascii") as f:
                limit = f.read().strip()
            with open(usage_file, encoding="ascii") as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < total:  # "max", or v1's huge number: no limit
            total, available = int(limit), min(available, max(0, int(limit) - used))
        break
    return total, available


def room_for(nbytes: int) -> bool:
    """Whether a copy of ``nbytes`` leaves the reserve available; True where memory is not known.
    The first refusal in a process says so once."""
    global _warned
    info = meminfo()
    if info is None:
        return True
    total, available = info
    reserve = max(RESERVE_MIN, int(total * RESERVE_FRACTION))
    if available - nbytes >= reserve:
        return True
    if not _warned:
        _warned = True
        warnings.warn(
            f"lmatlas: {available >> 20} MB of memory available; the batched kernels' weight copies are not "
            f"made (each would leave less than {reserve >> 20} MB), so batched decoding reads the weights "
            "as they are, a little more slowly",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


__all__ = ["RESERVE_FRACTION", "RESERVE_MIN", "meminfo", "room_for"]
