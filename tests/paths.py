"""Where the tests' real data lives: ``tests/data`` (its README names each item's source and
licence). A missing file fails the test that needs it, never skips it."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


def data_file(*parts: str) -> Path:
    """``tests/data/<parts>``, which must exist."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"test data {path} is missing; it is part of the project under tests/data")
    return path
