"""The one switch of the runtime: ``LMATLAS_KERNELS=0`` keeps every compiled kernel off (the C
library is then never built, and models stay plain PyTorch)."""

from __future__ import annotations

import os


def enabled() -> bool:
    """Whether the runtime's kernels may be used (read at each call, so a test or a user can
    change it between decodes)."""
    return os.environ.get("LMATLAS_KERNELS", "1").strip() != "0"


__all__ = ["enabled"]
