"""A hybrid search engine over documents: BM25 and sentence embeddings, fused.

Files (text, Markdown, reStructuredText, HTML, PDF, JSON Lines, source code: ``documents.py``)
are cut into passages of a few paragraphs, embedded with a sentence-embedding model
(``vector_index.py``) and indexed for BM25 (``lexical.py``). A query ranks the passages by
meaning, by words, or by both fused (``hybrid``, the default), and may re-score the best with a
cross-encoder (``rerank.py``).

An index is a folder:

- ``lmatlas-index``: the marker that says the folder is a search index;
- ``manifest.json``: the format, the model, the vector and graph files, and for each file its
  content hash and its passages' rows. It is what a query reads first, and what a build writes
  last: it publishes the build;
- ``vectors-G.f32``: the vectors, appended to (``G``: a generation, new when the model changes);
- ``lexical-G/``: the Tantivy index, which also keeps the passages' text;
- ``graph-G-S.usearch``: the HNSW graph of large indexes, a new file each build (``S``).

A rebuild embeds only the files whose content changed. Until the manifest is replaced nothing a
query reads has changed (rows are appended past the published ones, the graph is a new file),
so a build stopped at any point leaves the previous index whole; the next build clears what it
left. Two builds of one index at once are refused by a lock file.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import vector_index
from .documents import (  # noqa: F401  (chunk_text, fit_chunks: the chunking API, re-exported)
    Chunk, Unreadable, chunk_sections, chunk_text, content_digest, find_files, fit_chunks, is_image, sections,
)
from .errors import LmatlasError
from .files import read_json, write_text_atomic
from .lexical import LexicalIndex, query_terms
from .ray_data import SHARDS

FORMAT = 3  # 3: hybrid (Tantivy beside appended vectors), formats, graph; 2: vectors.npy + chunks.jsonl
MARKER = "lmatlas-index"
LOCK = "build.lock"
MODES = ("hybrid", "semantic", "lexical")
FUSIONS = ("rrf", "weighted")
RRF_K = 60  # reciprocal-rank fusion's constant (Cormack et al. 2009)
# The fusion of --mode hybrid, chosen on benchmarks/search_eval.py (docs/search.md has the figures).
FUSION = "weighted"
SEMANTIC_WEIGHT = 0.4  # of the weighted fusion; BM25 has the rest
COMPACT_MIN_ROWS = 1000  # garbage rows tolerated before a build rewrites the index
CANDIDATES = 50  # passages each ranking offers the fusion (at least; 5 k when k is larger)


@dataclass
class Hit:
    score: float
    source: str
    line: int
    text: str
    page: int | None = None
    snippet: str = ""
    highlights: list[tuple[int, int]] = field(default_factory=list)  # spans of the query's words in snippet


def fuse(rankings: list[list[tuple[int, float]]], how: str = "rrf", weights: list[float] | None = None) -> list[tuple[int, float]]:
    """One ranking from several ``[(row, score)]`` lists, best first.

    ``rrf``: reciprocal-rank fusion, sum of 1 / (60 + rank), blind to the scores' scales.
    ``weighted``: each list's scores scaled to [0, 1] by its own min and max, then a weighted sum.
    """
    weights = weights or [1.0] * len(rankings)
    total: dict[int, float] = {}
    for ranking, w in zip(rankings, weights):
        if not ranking:
            continue
        if how == "rrf":
            for rank, (row, _) in enumerate(ranking, start=1):
                total[row] = total.get(row, 0.0) + w / (RRF_K + rank)
        else:
            scores = np.array([s for _, s in ranking], dtype=np.float64)
            lo, span = scores.min(), scores.max() - scores.min()
            for (row, s) in ranking:
                total[row] = total.get(row, 0.0) + w * ((s - lo) / span if span > 0 else 1.0)
    return sorted(total.items(), key=lambda item: (-item[1], item[0]))


class Index:
    """An index folder: build (incrementally) and query."""

    def __init__(self, folder: str | os.PathLike, ann_min_rows: int = vector_index.ANN_MIN_ROWS):
        self.folder = Path(folder)
        self.ann_min_rows = ann_min_rows

    @property
    def manifest_file(self) -> Path:
        return self.folder / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_file.exists()

    # -- reading the manifest ---------------------------------------------------------------

    def _read_manifest(self) -> dict:
        if not self.exists():
            raise LmatlasError(f"{self.folder}: no search index here (build one with `lmatlas search build`)")
        manifest = read_json(self.manifest_file)
        found = manifest.get("format", manifest.get("version"))
        if found != FORMAT:
            older = isinstance(found, int) and found < FORMAT
            raise LmatlasError(
                f"{self.folder}: the search index is in format {found}, "
                + (f"written by an older lmatlas; this one reads format {FORMAT}: build it again with `lmatlas search build`"
                   if older else f"which this lmatlas (format {FORMAT}) does not read; build it again or update lmatlas")
            )
        for key in ("model", "dim", "rows", "vectors", "lexical", "files"):
            if key not in manifest:
                raise LmatlasError(f"{self.manifest_file}: the search index is damaged (no {key!r}); build it again")
        return manifest

    @staticmethod
    def _live(manifest: dict, path_glob: str | None = None) -> np.ndarray:
        live = np.zeros(manifest["rows"], dtype=bool)
        for source, entry in manifest["files"].items():
            if path_glob is None or _path_matches(source, path_glob):
                lo, hi = entry["rows"]
                live[lo:hi] = True
        return live

    # -- building ---------------------------------------------------------------------------

    def _claim_folder(self) -> None:
        """Refuse a folder that holds something other than an index; mark a new one."""
        if self.folder.exists() and not self.folder.is_dir():
            raise LmatlasError(f"{self.folder}: a file, not an index folder")
        marked = (self.folder / MARKER).exists() or self.exists()
        if self.folder.exists() and any(self.folder.iterdir()) and not marked:
            raise LmatlasError(
                f"{self.folder}: this folder holds other files and is not a search index (no {MARKER} file); "
                "name a new or empty folder"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / MARKER).touch()

    def build(
        self,
        paths: Iterable[str | os.PathLike],
        model: str | None = None,
        batch_size: int = 32,
        text_field: str | None = None,
        progress: bool = False,
        ray=None,
    ) -> dict:
        """Index ``paths``; returns counts of files embedded, reused, dropped and skipped (with
        the reason for each skipped file in ``skipped``). ``progress``: a bar of the passages
        embedded, on standard error. ``ray``: embed the new passages on Ray Data (True: a Ray
        instance on this machine; ``"HOST:PORT"``: a cluster; or a
        ``lmatlas.ray_data.RayOptions``), with ``pip install 'lmatlas[ray]'``."""
        from filelock import FileLock, Timeout

        ray = self._ray(ray)
        files = find_files(list(paths), images=model is not None and _model_type(str(model)) == "clip")
        new = not self.folder.exists()
        self._claim_folder()
        lock = FileLock(str(self.folder / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise LmatlasError(
                f"{self.folder}: another build of this index is running (it holds {self.folder / LOCK}); wait for it to end"
            ) from None
        try:
            try:
                return self._build(files, model, batch_size, text_field, progress, ray)
            finally:
                lock.release()
        except BaseException:
            if new and not self.exists():  # a first build that failed leaves no folder behind
                shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def _previous(self, model_id: str) -> dict | None:
        """The published manifest when this build can extend it (same format and model)."""
        if not self.exists():
            return None
        try:
            manifest = self._read_manifest()
        except LmatlasError:
            return None  # an older format or a damaged index: built again from nothing
        return manifest if manifest["model"] == model_id else None

    def _build(self, files: list[Path], model: str | None, batch_size: int, text_field: str | None,
               progress: bool = False, ray=None) -> dict:

        model_id = "default" if model is None else str(model)
        old = self._previous(model_id)
        old_files = old["files"] if old else {}
        generation = (old or {}).get("generation", _last_generation(self.folder)) + (0 if old else 1)
        rows = old["rows"] if old else 0
        stats = {"embedded": 0, "reused": 0, "dropped": 0, "skipped": [], "chunks": 0}

        # Read every changed file first: a file that is not text stops the build before it writes.
        digests = {str(f): content_digest(f, text_field) for f in files}
        changed: dict[str, list[Chunk]] = {}
        for f in files:
            source = str(f)
            if source in old_files and old_files[source]["sha256"] == digests[source]:
                continue
            try:
                parts = sections(f, text_field)
            except Unreadable as e:
                stats["skipped"].append((source, str(e)))
                continue
            if not any(p.text.strip() for p in parts):
                stats["skipped"].append((source, "empty: no text to index"))
                continue
            changed[source] = parts

        enc = encoder(model) if changed else None
        fitted: dict[str, list[Chunk]] = {}
        for source, parts in changed.items():
            chunks = fit_chunks(chunk_sections(parts), enc.token_counts, enc.max_seq_length)
            if chunks:
                fitted[source] = chunks
            else:
                stats["skipped"].append((source, "empty: no text to index"))
        old_dim = old["dim"] if old else None
        kept = [s for s in map(str, files) if s not in changed and s in old_files and old_files[s]["sha256"] == digests[s]]
        if not fitted and not kept:
            reasons = "; ".join(f"{source}: {why}" for source, why in stats["skipped"])
            raise LmatlasError(f"the files given hold no text to index ({reasons or ', '.join(map(str, files))})")
        new_rows = sum(len(c) for c in fitted.values())
        kept_rows = sum(old_files[s]["rows"][1] - old_files[s]["rows"][0] for s in kept)

        stats["dropped"] = len(set(old_files) - set(kept) - set(fitted) - set(changed))

        # Rows of changed and removed files stay in the files as garbage until it outweighs the
        # live rows; then the build starts a new generation that holds the live rows alone.
        new_files: dict = {}
        carried: list[Chunk] = []
        carried_vectors = None
        if old and old["rows"] - kept_rows > max(COMPACT_MIN_ROWS, kept_rows + new_rows):
            carried, carried_vectors = self._carry(old, kept)
            generation, rows = max(generation, _last_generation(self.folder)) + 1, 0
            for source in kept:  # renumbered, in the order of the carried rows
                lo, hi = old_files[source]["rows"]
                new_files[source] = {"sha256": digests[source], "rows": [rows, rows + hi - lo]}
                rows += hi - lo
            old = None  # nothing of the old generation is updated: its files go after publishing
            first_new = 0
        else:
            new_files = {source: old_files[source] for source in kept}
            first_new = rows
        for source, chunks in fitted.items():
            new_files[source] = {"sha256": digests[source], "rows": [rows, rows + len(chunks)]}
            rows += len(chunks)
        new_chunks = carried + [c for chunks in fitted.values() for c in chunks]
        stats["embedded"], stats["reused"] = len(fitted), len(kept)

        dim = enc.dim if enc is not None else old_dim
        vectors_name = f"vectors-{generation}.f32"
        lexical_name = f"lexical-{generation}"
        if new_chunks:  # all files' passages in one call: batches of similar lengths across files
            vectors = _embed(enc, new_chunks[len(carried):], batch_size, progress, dim, model, ray)
            matrix = np.asarray(vectors, dtype=np.float32).reshape(-1, dim)
            if carried_vectors is not None:
                matrix = np.concatenate([carried_vectors, matrix])
            vector_index.append_rows(self.folder / vectors_name, first_new, matrix)
        lexical = LexicalIndex(self.folder / lexical_name)
        lexical.replace_from(first_new, list(range(first_new, rows)), new_chunks)

        manifest = {
            "format": FORMAT, "model": model_id, "dim": dim, "rows": rows, "generation": generation,
            "vectors": vectors_name, "lexical": lexical_name, "graph": None, "files": new_files,
        }
        live = self._live(manifest)
        old_live = self._live(old) if old else np.zeros(0, dtype=bool)
        dead = np.flatnonzero(old_live & ~live[: len(old_live)])
        if int(live.sum()) >= self.ann_min_rows:
            manifest["graph"] = self._write_graph(old, manifest, live, dead, first_new)

        # Publishing: the manifest names the new state in one rename.
        write_text_atomic(self.manifest_file, json.dumps(manifest, indent=1))
        # Then the clean-up a stop would only postpone: passages of changed and removed files, and
        # the files of earlier generations and graphs.
        lexical.delete_rows(dead.tolist())
        _remove_unnamed(self.folder, manifest)
        stats["chunks"] = int(live.sum())
        return stats

    def _ray(self, ray):
        """The Ray options of a build, its shards kept inside the index folder (a stopped
        build's are swept by the next); None without Ray. A missing Ray is said before anything
        is read or written."""
        if ray is None or ray is False:
            return None
        from dataclasses import replace

        from .ray_data import import_ray, ray_options

        opts = ray_options(ray)
        import_ray()
        return replace(opts, scratch=opts.scratch or self.folder)

    def _carry(self, old: dict, kept: list[str]) -> tuple[list[Chunk], np.ndarray]:
        """The passages and vectors of the unchanged files ``kept``, in that order, to start a new
        generation with."""
        rows = [r for s in kept for r in range(*old["files"][s]["rows"])]
        found = LexicalIndex(self.folder / old["lexical"]).passages(rows, "")
        vectors = vector_index.open_rows(self.folder / old["vectors"], old["rows"], old["dim"])
        return [found[r][0] for r in rows], np.asarray(vectors[rows], dtype=np.float32).reshape(len(rows), old["dim"])

    def _write_graph(self, old: dict | None, manifest: dict, live: np.ndarray, dead: np.ndarray, first_new: int) -> str:
        vectors = vector_index.open_rows(self.folder / manifest["vectors"], manifest["rows"], manifest["dim"])
        old_graph = old.get("graph") if old else None
        serial = int(old_graph.rsplit("-", 1)[1].split(".")[0]) + 1 if old_graph else 0
        name = f"graph-{manifest['generation']}-{serial}.usearch"
        if old_graph:
            add = np.flatnonzero(live[first_new:]) + first_new
            vector_index.update_graph(self.folder / old_graph, self.folder / name, vectors, add, dead)
        else:
            vector_index.update_graph(None, self.folder / name, vectors, np.flatnonzero(live), np.zeros(0))
        return name

    # -- querying ---------------------------------------------------------------------------

    def query(
        self,
        question: str,
        k: int = 5,
        mode: str = "hybrid",
        path: str | None = None,
        rerank: str | None = None,
        fusion: str | None = None,
        exact: bool | None = None,
    ) -> list[Hit]:
        """The ``k`` best passages for ``question``.

        ``mode``: ``semantic`` (cosine of the embeddings), ``lexical`` (BM25) or ``hybrid`` (the
        two fused by ``fusion``, ``rrf`` or ``weighted``: by default ``FUSION``); ``path``: a glob the passage's file must match (on its full
        path, or on its path relative to the working folder); ``rerank``: a cross-encoder that
        re-scores the candidates; ``exact``: score every row even where the index has a graph.
        """
        if not question.strip():
            raise LmatlasError("the question is empty")
        if k < 1:
            raise LmatlasError(f"-k must be at least 1, not {k}")
        if mode not in MODES:
            raise LmatlasError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
        fusion = fusion or FUSION
        if fusion not in FUSIONS:
            raise LmatlasError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
        manifest = self._read_manifest()
        live = self._live(manifest, path)
        if not live.any():
            raise LmatlasError(f"no file of the index {self.folder} matches --path {path}")
        n = max(CANDIDATES, 5 * k)
        rankings = []
        if mode in ("semantic", "hybrid"):
            rankings.append(self._semantic(question, manifest, live, n, exact, path is not None))
        if mode in ("lexical", "hybrid"):
            if mode == "lexical" and not query_terms(question):
                raise LmatlasError(f"the question {question!r} has no words to look up")
            rankings.append(self._lexical(manifest, question, live, n))
        ranked = rankings[0] if len(rankings) == 1 else fuse(rankings, fusion, [SEMANTIC_WEIGHT, 1 - SEMANTIC_WEIGHT] if fusion == "weighted" else None)
        depth = n if rerank else k
        top = ranked[:depth]
        found = LexicalIndex(self.folder / manifest["lexical"]).passages([row for row, _ in top], question)
        hits = []
        for row, score in top:
            if row not in found:
                raise LmatlasError(f"{self.folder}: the search index is damaged (passage {row} is missing); build it again")
            chunk, snippet, spans = found[row]
            hits.append(Hit(score, chunk.source, chunk.line, chunk.text, chunk.page, snippet, spans))
        if rerank:
            from .rerank import rerank as rescore

            hits = rescore(rerank, question, hits)
        return hits[:k]

    def _semantic(self, question, manifest, live, n, exact, filtered) -> list[tuple[int, float]]:
        model = None if manifest["model"] == "default" else manifest["model"]
        q = encoder(model).encode([question], normalize=True)[0].astype(np.float32)
        # The graph knows nothing of --path: a filtered query scores every row it keeps.
        if manifest.get("graph") and not exact and not filtered:
            found = vector_index.graph_top(self.folder / manifest["graph"], manifest["dim"], q, n)
            return [(row, s) for row, s in found if row < len(live) and live[row]]
        vectors = vector_index.open_rows(self.folder / manifest["vectors"], manifest["rows"], manifest["dim"])
        return vector_index.exact_top(vectors, q, live, n)

    def _lexical(self, manifest, question, live, n) -> list[tuple[int, float]]:
        lexical = LexicalIndex(self.folder / manifest["lexical"])
        limit = n
        while True:  # rows outside --path take places: ask for more until n are kept or none remain
            found = lexical.search(question, limit)
            kept = [(row, s) for row, s in found if row < len(live) and live[row]]
            if len(kept) >= n or len(found) < limit:
                return kept[:n]
            limit *= 4


def _path_matches(source: str, pattern: str) -> bool:
    rel = os.path.relpath(source)
    return any(fnmatch.fnmatch(p, pattern) for p in (source, rel, Path(source).name))


def _last_generation(folder: Path) -> int:
    gens = [int(p.name.split("-")[1].split(".")[0]) for p in folder.glob("vectors-*.f32") if p.name.split("-")[1].split(".")[0].isdigit()]
    return max(gens, default=0)


def _remove_unnamed(folder: Path, manifest: dict) -> None:
    """Delete the index files the manifest no longer names (and those of format 2)."""
    keep = {manifest["vectors"], manifest["lexical"], manifest.get("graph")}
    for p in folder.iterdir():
        stale = p.name.startswith(("vectors-", "lexical-", "graph-", SHARDS)) or p.name in ("vectors.npy", "chunks.jsonl")
        if stale and p.name not in keep:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


_IMAGE_TEXT: dict[str, Any] = {}


def encoder(model: str | None):
    """The encoder of an index: a CLIP model's two towers (images and texts in one space) for a
    CLIP checkpoint, else a sentence encoder (``embeddings.encoder``); each loaded once."""
    from .embeddings import encoder as sentence_encoder

    if model is not None and _model_type(model) == "clip":
        from .image_text import ImageTextEncoder

        if str(model) not in _IMAGE_TEXT:
            _IMAGE_TEXT[str(model)] = ImageTextEncoder(model)
        return _IMAGE_TEXT[str(model)]
    return sentence_encoder(model)


def _model_type(model: str) -> str | None:
    """config.json's model_type of a local folder (a hub id is read when it is loaded)."""
    config = Path(model) / "config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") if config.is_file() else None
    except (OSError, ValueError):
        return None


def _embed(enc, chunks: list[Chunk], batch_size: int, progress: bool, dim: int, model: str | None = None,
           ray=None) -> np.ndarray:
    """The unit vectors of new passages, in order: texts by the text encoder, images (with a
    CLIP model) by its image tower; on Ray with ``ray`` (``RayOptions``), by actors that each
    load ``model``."""
    if ray is not None:
        from .ray_data import embed as embed_on_ray

        pictures = [is_image(c.source) for c in chunks]
        return embed_on_ray([c.source if p else c.text for c, p in zip(chunks, pictures)], model, ray=ray,
                            batch_size=batch_size, normalize=True, progress=progress, images=pictures, index=True)
    out = np.zeros((len(chunks), dim), dtype=np.float32)
    pictures = [i for i, c in enumerate(chunks) if is_image(c.source)]
    texts = [i for i, c in enumerate(chunks) if not is_image(c.source)]
    if texts:
        out[texts] = enc.encode([chunks[i].text for i in texts], batch_size=batch_size, normalize=True,
                                progress=progress)
    if pictures:
        out[pictures] = enc.encode_images([chunks[i].source for i in pictures])
    return out
