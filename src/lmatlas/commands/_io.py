"""Reading inputs and checking outputs for the commands: files, pipes or standard input, strictly
UTF-8; every output path checked before any work, so that a mistake costs nothing."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import LmatlasError
from ..files import read_text


def _named(flag: str | None, path) -> str:
    return f"{flag} {path}" if flag else str(path)


def read_input(source: str, flag: str | None = None) -> str:
    """The text of a file, or of standard input for ``-``, strictly UTF-8 (a byte-order mark is
    dropped). A named pipe or ``<(command)`` is read like a file. ``flag`` is the option that
    named the file, for the message when it is missing or a folder."""
    if source != "-":
        check_input_file(source, flag)
        return read_text(source, exact=True)
    try:
        return sys.stdin.buffer.read().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LmatlasError(f"standard input: not UTF-8 text (byte {e.start} cannot be decoded)") from None


def check_input_file(source, flag: str | None = None) -> None:
    """That ``source`` is something to read: a file, a named pipe, ``/dev/stdin`` — not a folder."""
    path = Path(source)
    if path.is_dir():
        raise LmatlasError(f"{_named(flag, source)}: is a folder; give a file")
    if not path.exists():
        raise LmatlasError(f"{_named(flag, source)}: no such file")


@contextlib.contextmanager
def readable_again(paths: list[str] | None) -> Iterator[list[str] | None]:
    """``paths`` where each pipe (a named pipe, bash's ``<(command)``) is replaced by a file of
    what it held, for work that reads its files more than once (training reads its data to
    learn a tokenizer, then to train); the copies go when the work ends."""
    if not paths or all(Path(p).is_file() or not Path(p).exists() or Path(p).is_dir() for p in paths):
        yield paths
        return
    with tempfile.TemporaryDirectory(prefix="lmatlas-") as folder:
        out = []
        for i, p in enumerate(paths):
            if Path(p).is_file() or not Path(p).exists() or Path(p).is_dir():
                out.append(p)
                continue
            copy = Path(folder) / f"{i}-{Path(p).name}"
            copy.write_bytes(Path(p).read_bytes())
            out.append(str(copy))
        yield out


def read_lines(source: str, flag: str | None = None) -> list[str]:
    """One text per line from a file, or from standard input for ``-``."""
    lines = read_input(source, flag).splitlines()
    if not any(line.strip() for line in lines):
        name = "standard input" if source == "-" else source
        raise LmatlasError(f"{name}: no text (the input is empty)")
    return lines


def check_output_file(output, flag: str) -> Path:
    """An output file to write at the end of the work, checked now: its folder exists and the
    name is not a folder."""
    path = Path(output)
    if path.is_dir():
        raise LmatlasError(f"{flag} {output}: is a folder; give a file name")
    if not path.parent.is_dir():
        what = f"{path.parent} is a file, not a folder" if path.parent.exists() else f"folder {path.parent} does not exist"
        raise LmatlasError(f"{flag} {output}: {what}")
    return path


def check_output_folder(output, flag: str) -> Path:
    """An output folder (made if absent), checked now: neither it nor a folder above it is a file."""
    path = Path(output)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "" if p == path else f" ({p} is a file)"
                raise LmatlasError(f"{flag} {output}: is not a folder{where}; give a folder name")
            break
    return path


def add_progress_option(parser) -> None:
    """``--progress/--no-progress``: a progress bar on standard error (default: when it is a terminal)."""
    import argparse

    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar on standard error (default: when it is a terminal)")


def progress_wanted(args) -> bool:
    wanted = getattr(args, "progress", None)
    return sys.stderr.isatty() if wanted is None else wanted


def add_model_options(parser) -> None:
    parser.add_argument("--model", "-m", default=None, help="model folder or hub id (default: all-MiniLM-L6-v2)")
    parser.add_argument(
        "--no-truncate",
        dest="truncate",
        action="store_false",
        help="refuse inputs longer than the model's positions instead of truncating them",
    )
