"""The inputs of `lmatlas run`: texts from arguments, a file (plain text, JSON Lines, CSV, TSV)
or standard input, and image files and folders; each record with its line where it has one, or
the reason it cannot run."""

from __future__ import annotations

import csv
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

from ..errors import LmatlasError
from ._io import check_input_file, read_input

FORMATS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def source_name(args) -> str:
    return "standard input" if args.input in (None, "-") else args.input


def records(args) -> tuple[list[tuple[int | None, Any, str | None]], bool, list[str] | None]:
    """The records, whether they came from a file, and a table's header."""
    if args.texts:
        if args.input:
            raise LmatlasError("give the inputs as TEXT arguments or with --input, not both")
        return [(None, t, None) for t in args.texts], False, None
    if args.input is None and sys.stdin.isatty():
        raise LmatlasError("no inputs: give TEXT arguments, --input FILE, or pipe texts into standard input")
    source = args.input or "-"
    if source != "-":
        check_input_file(source, "--input")
    fmt = args.format
    if fmt is None:
        # A pipe (standard input, a named pipe, bash's <(...)) has no name to tell: plain text.
        piped = source == "-" or not Path(source).is_file()
        fmt = "txt" if piped else FORMATS.get(Path(source).suffix.lower())
        if fmt is None:
            raise LmatlasError(
                f"--input {source}: cannot tell the format from the name; it must end in "
                f"{', '.join(sorted(FORMATS))}, or give --format"
            )
    text = read_input(source, "--input")
    if args.format is None and fmt == "txt" and _looks_like_chats(text):
        warnings.warn(f"{source_name(args)} holds JSON lines with \"messages\": read as chats (--format jsonl); "
                      "--format txt takes each line as plain text")
        fmt = "jsonl"
    if fmt == "txt":
        return [(n, line, None) for n, line in enumerate(text.splitlines(), 1) if line.strip()], True, None
    if fmt == "jsonl":
        return list(_jsonl(text)), True, None
    header, rows = _table(text, "\t" if fmt == "tsv" else ",", source)
    return rows, True, header


def image_items(args) -> list[tuple]:
    """An image task's inputs: the image files named, and those of the folders named."""
    from ..images import expand_images

    if args.input:
        raise LmatlasError("image tasks take image files and folders as arguments, not --input")
    if not args.texts:
        raise LmatlasError("no inputs: give image files or folders of images as arguments")
    return [(None, str(path), None, str(path)) for path in expand_images(args.texts)]


def _looks_like_chats(text: str) -> bool:
    """Whether a text read as plain lines is JSON Lines of chats, the one case where a line of
    text is surely not meant as a prompt."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        value = json.loads(first)
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get("messages"), list)


def _jsonl(text: str) -> Iterator[tuple[int, Any, str | None]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as e:
            yield n, None, f"not valid JSON ({e})"
            continue
        if not isinstance(value, (str, dict)):
            yield n, None, f"a JSON line must be an object or a string, not {type(value).__name__}"
            continue
        yield n, value, None


def _table(text: str, delimiter: str, source: str) -> tuple[list[str], list[tuple[int, Any, str | None]]]:
    # GLUE's .tsv files are not quoted: a quote character is text there.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    kind = "TSV" if delimiter == "\t" else "CSV"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except StopIteration:
        raise LmatlasError(f"{source}: the file is empty") from None
    except csv.Error as e:
        raise LmatlasError(f"{source} line 1: cannot be read as {kind} ({e})") from None
    rows = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return header, rows
        except csv.Error as e:
            rows.append((reader.line_num, None, f"cannot be read as {kind} ({e})"))
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            rows.append((reader.line_num, None, f"has {len(row)} fields but the header has {len(header)}"))
            continue
        rows.append((reader.line_num, dict(zip(header, row)), None))
