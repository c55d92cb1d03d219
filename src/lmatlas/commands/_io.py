"""Reading inputs for the commands: files or standard input, strictly UTF-8."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import LmatlasError
from ..files import read_text


def read_input(source: str, flag: str | None = None) -> str:
    """The text of a file, or of standard input for ``-``, strictly UTF-8 (a byte-order mark is
    dropped). ``flag`` is the option that named the file, for the message when it is missing."""
    if source != "-":
        if not Path(source).is_file():
            raise LmatlasError(f"{flag + ' ' if flag else ''}{source}: no such file")
        return read_text(source, exact=True)
    try:
        return sys.stdin.buffer.read().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LmatlasError(f"standard input: not UTF-8 text (byte {e.start} cannot be decoded)") from None


def read_lines(source: str) -> list[str]:
    """One text per line from a file, or from standard input for ``-``."""
    lines = read_input(source).splitlines()
    if not any(line.strip() for line in lines):
        name = "standard input" if source == "-" else source
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
