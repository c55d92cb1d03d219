"""Reading the small text files of a model folder or an index: one place for each kind, so
that every missing, unreadable or malformed file gives the same one sentence naming it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .errors import LmatlasError


def read_text(path: str | os.PathLike, *, exact: bool = False) -> str:
    """The whole of a UTF-8 text file: in text mode, as Hugging Face reads its files (``\\r\\n``
    and ``\\r`` end lines too); ``exact``, as it is (a corpus to train on), less a byte-order
    mark."""
    try:
        if exact:
            return Path(path).read_bytes().decode("utf-8-sig")
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise LmatlasError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LmatlasError(f"{path}: a folder, not a file") from None
    except UnicodeDecodeError as e:
        raise LmatlasError(f"{path}: not UTF-8 text (byte {e.start} cannot be decoded)") from None
    except OSError as e:
        raise LmatlasError(f"{path}: cannot be read ({e.strerror or e})") from None


def read_json(path: str | os.PathLike, *, expect: type | None = dict) -> Any:
    """A JSON file's value; with ``expect`` (a JSON object by default), a value of another type
    is an error too."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LmatlasError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if expect is not None and not isinstance(data, expect):
        wanted = {dict: "object", list: "list"}.get(expect, expect.__name__)
        raise LmatlasError(f"{path}: expected a JSON {wanted}, found {type(data).__name__}")
    return data


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """The values of a JSON Lines file, one per non-blank line."""
    return [value for _, value in numbered_jsonl(read_text(path), path)]


def numbered_jsonl(text: str, path: str | os.PathLike) -> list[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of JSON Lines ``text`` (read from ``path``)."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            raise LmatlasError(f"{path}: line {number} is not valid JSON ({e.msg})") from None
    return rows


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, so that an interrupted
    write never leaves half a file."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write`` on a binary file beside ``path`` and rename it to ``path`` once closed: an
    interrupted write never leaves half a file, and a failed one leaves nothing."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["read_json", "read_jsonl", "read_text", "write_atomic", "write_text_atomic"]
