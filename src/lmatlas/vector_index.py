"""The semantic half of search: the passages' vectors, searched exactly or approximately.

Vectors live in one raw float32 file, a row per passage, only ever appended to: a build writes
its new rows after the published ones and the manifest then says how many rows there are, so a
build that stops half-way leaves rows nobody reads. The file is memory-mapped, never loaded
whole.

Below ``ANN_MIN_ROWS`` live passages a query scores every row (a matrix-vector product: exact,
and at that size a few milliseconds). Above it an HNSW graph from USearch answers. Measured
against hnswlib on 100,000 real passages (benchmarks/search_scale.py), both reach the same
recall at the same settings and hnswlib builds and searches faster; USearch is used because it
searches the saved graph memory-mapped, where hnswlib loads all of it into every querying
process, and because it is maintained (docs/search.md has the figures).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .errors import LmatlasError

ANN_MIN_ROWS = 20_000
HNSW_CONNECTIVITY = 16  # HNSW's M: links per node
HNSW_EXPANSION_ADD = 128  # efConstruction
HNSW_EXPANSION_SEARCH = 96  # ef at query time: recall@10 >= 0.95 at 100k real passages


def append_rows(path: Path, first_row: int, matrix: np.ndarray) -> None:
    """Write ``matrix`` at row ``first_row`` of the vector file (cutting off whatever a stopped
    build left after the published rows), flushed to disk before the manifest names it."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    mode = "r+b" if path.exists() else "w+b"
    with open(path, mode) as f:
        f.seek(first_row * matrix.shape[1] * 4 if matrix.size else 0)
        f.truncate()
        f.write(matrix.tobytes())
        f.flush()
        os.fsync(f.fileno())


def open_rows(path: Path, rows: int, dim: int) -> np.ndarray:
    """The first ``rows`` vectors, memory-mapped read-only."""
    if rows == 0:
        return np.zeros((0, dim), dtype=np.float32)
    size = path.stat().st_size if path.exists() else 0
    if size < rows * dim * 4:
        raise LmatlasError(f"{path}: the search index is damaged ({size} bytes of vectors, {rows * dim * 4} expected); build it again")
    return np.memmap(path, dtype=np.float32, mode="r", shape=(rows, dim))


def exact_top(vectors: np.ndarray, query: np.ndarray, live: np.ndarray, n: int) -> list[tuple[int, float]]:
    """``(row, cosine)`` of the ``n`` best live rows (``live``: a boolean mask over rows)."""
    scores = np.asarray(vectors @ query, dtype=np.float32)
    scores[~live] = -np.inf
    n = min(n, int(live.sum()))
    if n <= 0:
        return []
    top = np.argpartition(-scores, n - 1)[:n]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top]


def _new_graph(dim: int):
    from usearch.index import Index

    # f32 storage: the graph's scores are the same cosines the exact search gives.
    return Index(
        ndim=dim, metric="ip", dtype="f32", connectivity=HNSW_CONNECTIVITY,
        expansion_add=HNSW_EXPANSION_ADD, expansion_search=HNSW_EXPANSION_SEARCH,
    )


def update_graph(old: Path | None, new: Path, vectors: np.ndarray, add: np.ndarray, remove: np.ndarray) -> None:
    """Write to ``new`` the graph of ``old`` (or an empty one) less the rows ``remove``, plus the
    rows ``add`` of ``vectors``. ``old`` itself is never changed: the published index keeps it."""
    graph = _new_graph(vectors.shape[1])
    if old is not None:
        graph.load(str(old))
        if len(remove):
            graph.remove(np.asarray(remove, dtype=np.uint64))
    for lo in range(0, len(add), 50_000):  # in slices: the memory map is read a piece at a time
        keys = np.asarray(add[lo : lo + 50_000], dtype=np.uint64)
        graph.add(keys, np.ascontiguousarray(vectors[keys.astype(np.int64)]), threads=0)
    tmp = new.with_name(new.name + ".tmp")
    graph.save(str(tmp))
    os.replace(tmp, new)


@functools.lru_cache(maxsize=4)
def _view(path: str, dim: int, stamp: tuple[int, int]):
    """The graph file memory-mapped; kept while the file is the same (``stamp``: its inode and
    modification time), so that repeated queries do not map it again."""
    graph = _new_graph(dim)
    graph.view(path)
    return graph


def graph_top(path: Path, dim: int, query: np.ndarray, n: int) -> list[tuple[int, float]]:
    """``(row, cosine)`` of the ``n`` nearest rows by the HNSW graph at ``path``, memory-mapped."""
    st = os.stat(path)
    graph = _view(str(path), dim, (st.st_ino, st.st_mtime_ns))
    found = graph.search(np.asarray(query, dtype=np.float32), n)
    return [(int(k), float(1.0 - d)) for k, d in zip(found.keys, found.distances)]
