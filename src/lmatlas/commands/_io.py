"""Reading inputs for the commands: files or standard input, strictly UTF-8."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import LmatlasError


def read_lines(source: str) -> list[str]:
    """One text per line from a file, or from standard input for ``-``."""
    if source == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        path = Path(source)
        if not path.is_file():
            raise LmatlasError(f"{source}: no such file")
        data = path.read_bytes()
        name = source
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LmatlasError(f"{name}: not UTF-8 text (byte {e.start} cannot be decoded)") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise LmatlasError(f"{name}: no text (the input is empty)")
    return lines


def add_model_options(parser) -> None:
    parser.add_argument("--model", "-m", default=None, help="model folder or hub id (default: all-MiniLM-L6-v2)")
    parser.add_argument(
        "--no-truncate",
        dest="truncate",
        action="store_false",
        help="refuse inputs longer than the model's positions instead of truncating them",
    )
