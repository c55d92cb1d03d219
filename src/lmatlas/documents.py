"""Documents into passages: which files search reads, how each format gives its text, and how
text is cut into passages that fit an embedding model's window.

Each reader gives *sections* — a text and where it sits (the line it starts at and, for a PDF,
the page) — and each section is cut into chunks of a few paragraphs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .errors import LmatlasError
from .files import numbered_jsonl, read_text

PROSE_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
SOURCE_SUFFIXES = {
    ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp", ".java", ".js", ".ts", ".go", ".rs", ".rb",
    ".sh", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".sql", ".jl", ".r", ".scala", ".kt", ".swift",
}
HTML_SUFFIXES = {".html", ".htm"}
# Images: indexed by a CLIP model's image tower (``search build --model`` a CLIP folder), each
# one passage whose text, for BM25 and the hit's line, is its file name.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
SUFFIXES = PROSE_SUFFIXES | SOURCE_SUFFIXES | HTML_SUFFIXES | IMAGE_SUFFIXES | {".pdf", ".jsonl"}
CHUNK_CHARS = 800  # about 200 word pieces: inside all-MiniLM-L6-v2's 256-token window
# Page furniture that is not the page's content: menus, banners, footers, scripts.
HTML_CHROME = "script, style, noscript, template, nav, header, footer, aside, form, svg, [role=navigation], [aria-hidden=true]"
HTML_BLOCKS = {
    "p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "td", "th", "dt", "dd", "figcaption",
    "div", "section", "article", "main", "body", "table", "ul", "ol", "dl", "tr",
}


@dataclass
class Chunk:
    source: str
    line: int
    text: str
    page: int | None = None  # PDFs: the page (from 1); ``line`` then counts within the page


class Unreadable(Exception):
    """A file that cannot be read as its format says; the build names it and goes on."""


def find_files(paths: Iterable[str | os.PathLike], images: bool = False) -> list[Path]:
    """Files named directly, or found (recursively, hidden folders skipped) in folders; in a
    folder, files of other formats are passed over, a file named directly must be one we read.
    Images are read only with ``images`` (an index of a CLIP model)."""
    readable = SUFFIXES if images else SUFFIXES - IMAGE_SUFFIXES
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [Path(root) / n for n in sorted(names) if Path(n).suffix.lower() in readable]
        elif p.is_file():
            if p.suffix.lower() not in readable:
                raise LmatlasError(
                    f"{p}: not a format search reads (text, Markdown, reStructuredText, HTML, PDF, JSON Lines, "
                    "source code, or images with a CLIP model)"
                )
            files.append(p)
        else:
            raise LmatlasError(f"{p}: no such file or folder")
    if not files:
        raise LmatlasError(f"no files search reads (text, Markdown, HTML, PDF, JSON Lines, source) in {', '.join(map(str, paths))}")
    return sorted({f.resolve() for f in files})


def content_digest(path: Path, text_field: str | None) -> str:
    """A hash of what a file gives the index: its bytes, and the field read from a JSON Lines file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LmatlasError(f"{path}: cannot be read ({e.strerror or e})") from None
    if path.suffix.lower() == ".jsonl":
        data += f"\0text_field={text_field}".encode()
    return hashlib.sha256(data).hexdigest()


def sections(path: Path, text_field: str | None = None) -> list[Chunk]:
    """The file's text as sections (not yet cut). Raises ``Unreadable`` for a damaged PDF and
    ``LmatlasError`` for a file that is not text at all."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return _pdf_sections(path)
    if suffix in IMAGE_SUFFIXES:
        return [Chunk(str(path), 1, image_caption(path))]
    text = read_text(path)
    if "\0" in text:
        raise LmatlasError(f"{path}: not text (it holds NUL bytes)")
    if suffix in HTML_SUFFIXES:
        return [Chunk(str(path), 1, html_text(text))]
    if suffix == ".jsonl":
        return _jsonl_sections(path, text, text_field)
    return [Chunk(str(path), 1, text)]


def is_image(source: str | os.PathLike) -> bool:
    return Path(source).suffix.lower() in IMAGE_SUFFIXES


def image_caption(path: Path) -> str:
    """An image's text for lexical search: its file name, words apart ("red_circle-2.png" ->
    "red circle 2")."""
    return " ".join(path.stem.replace("_", " ").replace("-", " ").split()) or path.name


def html_text(html: str) -> str:
    """The readable text of a web page: navigation, headers, footers and scripts dropped; each
    block (paragraph, heading, list item, cell, division) a paragraph of its own, headings
    marked as in Markdown so that they start a passage."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    root = tree.body or tree.root
    if root is None:
        return ""
    for node in root.css(HTML_CHROME):
        node.decompose()
    # Text nodes grouped by their nearest block: inline tags (<b>, <a>) stay inside a line.
    blocks: list[list[str]] = []
    last_block = None
    for node in root.traverse(include_text=True):
        if node.tag != "-text":
            continue
        block = node.parent
        while block is not None and block.tag not in HTML_BLOCKS and block.parent is not None:
            block = block.parent
        if block is None:
            continue
        if block.mem_id != last_block:
            heading = block.tag in ("h1", "h2", "h3", "h4", "h5", "h6")
            blocks.append(["#" * int(block.tag[1]) + " "] if heading else [])
            last_block = block.mem_id
        blocks[-1].append(node.text_content or "")
    paragraphs = (" ".join("".join(parts).split()) for parts in blocks)
    return "\n\n".join(p for p in paragraphs if p.strip("# "))


def _pdf_sections(path: Path) -> list[Chunk]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise Unreadable(f"not a readable PDF ({type(e).__name__}: {e})") from None
    return [Chunk(str(path), 1, text, page=n) for n, text in enumerate(pages, start=1)]


def _jsonl_sections(path: Path, text: str, field: str | None) -> list[Chunk]:
    # Skipped with a notice, not fatal: a folder given to a build may hold JSON Lines of other
    # shapes (logs, data) beside the records meant.
    if not field:
        raise Unreadable("a JSON Lines file needs --text-field, the field that holds each record's text")
    out = []
    for number, record in numbered_jsonl(text, path):
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise Unreadable(f"line {number} has no text field {field!r}")
        out.append(Chunk(str(path), number, value))
    return out


def chunk_text(text: str, source: str, max_chars: int = CHUNK_CHARS) -> list[Chunk]:
    """Paragraphs (blank-line separated) joined up to ``max_chars``; longer ones cut by lines."""
    chunks: list[Chunk] = []
    buf: list[str] = []
    start = 0

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            chunks.append(Chunk(source, start, body))
        buf.clear()

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if sum(len(b) + 1 for b in buf) >= max_chars // 2:
                flush()
            elif buf:
                buf.append("")
            continue
        # A Markdown heading starts a new chunk: it names what follows.
        if line.lstrip().startswith("#") and buf:
            flush()
        while len(line) > max_chars:  # one very long line: cut it
            if buf:
                flush()
            start = number
            buf.append(line[:max_chars])
            flush()
            line = line[max_chars:]
        if buf and sum(len(b) + 1 for b in buf) + len(line) > max_chars:
            flush()
        if not buf:
            start = number
        buf.append(line)
    flush()
    return chunks


def chunk_sections(parts: list[Chunk], max_chars: int = CHUNK_CHARS) -> list[Chunk]:
    """Each section cut into chunks, which keep its page and count lines from its start."""
    out = []
    for part in parts:
        for c in chunk_text(part.text, part.source, max_chars):
            c.line += part.line - 1
            c.page = part.page
            out.append(c)
    return out


def fit_chunks(chunks: list[Chunk], count_tokens, limit: int) -> list[Chunk]:
    """Chunks cut again, by lines and then characters, until each fits the model's ``limit``
    tokens: dense text (code, tables, symbols) holds more tokens per character than prose, and
    what a chunk loses past the limit could never be found."""
    out: list[Chunk] = []
    counts = count_tokens([c.text for c in chunks]) if chunks else []
    for chunk, n in zip(chunks, counts):
        if n <= limit:
            out.append(chunk)
            continue
        # A size in characters that should fit, from this chunk's own characters per token.
        max_chars = max(16, int(len(chunk.text) * limit / n * 0.9))
        out += fit_chunks(chunk_sections([chunk], max_chars), count_tokens, limit)
    return out
