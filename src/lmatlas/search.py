"""A semantic search engine over text and Markdown files.

Files are cut into chunks of a few paragraphs (keeping their source and first line), embedded
with a sentence-embedding model, and stored in an index folder:

- ``manifest.json``: the model, and for each file its content hash and its chunks' range;
- ``chunks.jsonl``: one chunk a line (source, line, text);
- ``vectors.npy``: the chunks' normalised embeddings, in the same order.

A rebuild embeds only the files whose content changed. Each file of the index is written under
a temporary name and renamed, so an interrupted build leaves the previous index whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import LmatlasError
from .files import read_json, read_jsonl, read_text

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
CHUNK_CHARS = 800  # about 200 word pieces: inside all-MiniLM-L6-v2's 256-token window
INDEX_VERSION = 2  # 2: chunks fit the model's token window
MARKER = ".lmatlas-index"  # an empty file that says a folder is an index, which a build may write into


@dataclass
class Chunk:
    source: str
    line: int
    text: str


@dataclass
class Hit:
    score: float
    source: str
    line: int
    text: str


def find_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Text files named directly, or found (recursively, hidden folders skipped) in folders."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [Path(root) / n for n in sorted(names) if Path(n).suffix.lower() in TEXT_SUFFIXES]
        elif p.is_file():
            files.append(p)
        else:
            raise LmatlasError(f"{p}: no such file or folder")
    if not files:
        raise LmatlasError(f"no text or Markdown files ({', '.join(sorted(TEXT_SUFFIXES))}) in {', '.join(map(str, paths))}")
    return sorted({f.resolve() for f in files})


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
        pieces = chunk_text(chunk.text, chunk.source, max_chars=max_chars)
        for piece in pieces:
            piece.line += chunk.line - 1
        out += fit_chunks(pieces, count_tokens, limit)
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class Index:
    """An index folder: build (incrementally) and query."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @property
    def manifest_file(self) -> Path:
        return self.folder / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_file.exists()

    def _check_folder(self) -> None:
        """That the index may be written here: a new folder, or one an index made (its marker
        file, or the manifest of an index older than the marker) — never a folder of other files."""
        if self.folder.exists() and not self.folder.is_dir():
            raise LmatlasError(f"{self.folder}: a file, not an index folder; give a folder name")
        if self.folder.is_dir() and any(self.folder.iterdir()):
            if not ((self.folder / MARKER).exists() or self.exists()):
                raise LmatlasError(f"{self.folder}: a folder that is not a search index and not empty; "
                                   "give a new folder name")

    def _load(self) -> tuple[dict, list[Chunk], np.ndarray]:
        if not self.exists():
            raise LmatlasError(f"{self.folder}: no search index here (build one with `lmatlas search build`)")
        try:
            manifest = read_json(self.manifest_file)
            chunks = [Chunk(**row) for row in read_jsonl(self.folder / "chunks.jsonl")]
            vectors = np.load(self.folder / "vectors.npy")
        except (OSError, ValueError, TypeError) as e:
            raise LmatlasError(f"{self.folder}: the search index is damaged ({e}); rebuild it") from None
        if len(chunks) != len(vectors):
            raise LmatlasError(f"{self.folder}: the search index is damaged (chunks and vectors differ); rebuild it")
        return manifest, chunks, vectors

    def build(self, paths: Iterable[str | os.PathLike], model: str | None = None, batch_size: int = 32,
              progress: bool = False) -> dict:
        """Index ``paths``; returns counts of files embedded, reused and dropped. A file with no
        text is left out, with a notice. ``progress``: a bar of the passages embedded."""
        from .embeddings import encoder, progress_bar

        self._check_folder()
        files = find_files(list(paths))
        texts = {str(f): read_text(f) for f in files}  # read all first: a bad file stops us early
        for source in [s for s, t in texts.items() if not t.strip()]:
            warnings.warn(f"{source}: no text; left out of the index")
            del texts[source]
        model_id = "default" if model is None else str(model)
        old_files: dict = {}
        old_chunks: list[Chunk] = []
        old_vectors = None
        if self.exists():
            manifest, old_chunks, old_vectors = self._load()
            if manifest.get("model") == model_id and manifest.get("version") == INDEX_VERSION:
                old_files = manifest.get("files", {})
        enc = None
        chunks: list[Chunk] = []
        vectors: list[np.ndarray] = []
        new_files = {}
        stats = {"embedded": 0, "reused": 0, "dropped": len(set(old_files) - set(texts)), "chunks": 0}
        bar = progress_bar(progress, 0, "passage")
        for source, text in texts.items():
            digest = _digest(text)
            old = old_files.get(source)
            if old and old["sha256"] == digest:
                lo, hi = old["chunks"]
                file_chunks, file_vectors = old_chunks[lo:hi], old_vectors[lo:hi]
                stats["reused"] += 1
            else:
                enc = enc or encoder(model)
                file_chunks = fit_chunks(chunk_text(text, source), enc.token_counts, enc.max_seq_length)
                bar.total = (bar.total or 0) + len(file_chunks)  # one bar, grown file by file
                file_vectors = enc.encode([c.text for c in file_chunks], batch_size=batch_size, normalize=True,
                                          progress=bar)
                stats["embedded"] += 1
            new_files[source] = {"sha256": digest, "chunks": [len(chunks), len(chunks) + len(file_chunks)]}
            chunks += file_chunks
            vectors.append(np.asarray(file_vectors, dtype=np.float32).reshape(len(file_chunks), -1))
        bar.close()
        if not chunks:
            raise LmatlasError(f"the files given hold no text to index: {', '.join(map(str, files))}")
        matrix = np.concatenate(vectors)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / MARKER).touch()
        def write_vectors(p: Path) -> None:
            with open(p, "wb") as f:  # closed (flushed) before the rename makes it the index's
                np.save(f, matrix)

        _write_atomic(self.folder / "vectors.npy", write_vectors)

        def write_chunks(p: Path) -> None:
            with open(p, "w", encoding="utf-8") as f:
                for c in chunks:
                    f.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")

        _write_atomic(self.folder / "chunks.jsonl", write_chunks)
        manifest = {"version": INDEX_VERSION, "model": model_id, "files": new_files}
        # The manifest goes last: it is what says the index is complete.
        _write_atomic(self.manifest_file, lambda p: p.write_text(json.dumps(manifest, indent=1), encoding="utf-8"))
        stats["chunks"] = len(chunks)
        return stats

    def query(self, question: str, k: int = 5) -> list[Hit]:
        from .embeddings import encoder

        if not question.strip():
            raise LmatlasError("the question is empty")
        if k < 1:
            raise LmatlasError(f"-k must be at least 1, not {k}")
        manifest, chunks, vectors = self._load()
        model = None if manifest["model"] == "default" else manifest["model"]
        q = encoder(model).encode([question], normalize=True)[0]
        scores = vectors @ q
        top = np.argsort(-scores, kind="stable")[:k]
        return [Hit(float(scores[i]), chunks[i].source, chunks[i].line, chunks[i].text) for i in top]
