"""`lmatlas search` at 100,000 real passages: build time, size on disk, query latency of exact and
approximate (HNSW) search, and the recall@10 of the approximate search against the exact one.

The passages are real sentences and speeches (benchmarks/_search_corpus.py: SST-2, STS-B,
Shakespeare). Embedding them is the slow part of a build and does not depend on the index, so it
is done once and kept in ``--cache`` (its time is printed from that run); the index is then built
by ``Index.build`` itself, with the model's ``encode`` answered from those vectors. The queries
are 300 real sentences that are not passages (the second sentences of STS-B pairs).

Also the measurement behind the choice of HNSW library: USearch against hnswlib, same
connectivity and search depth, build time and latency at their recall.

    python benchmarks/search_scale.py [--n 100000] [--cache /tmp/search-scale-vectors.npy] [--libraries-only]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import _search_corpus as data


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):7.2f} ms   p99 {np.percentile(ms, 99):7.2f} ms"


def recall(approx: list[list[int]], exact: list[list[int]]) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))


def embed_cached(passages: list[str], cache: Path) -> np.ndarray:
    from lmatlas.embeddings import encoder

    meta = cache.with_suffix(".json")
    if cache.exists() and meta.exists() and json.loads(meta.read_text())["n"] == len(passages):
        info = json.loads(meta.read_text())
        print(f"embedding: {len(passages)} passages, {info['seconds']:.0f} s in the run that made {cache} "
              f"({len(passages) / info['seconds']:.0f} passages/s)")
        return np.load(cache)
    t = time.perf_counter()
    vectors = encoder(None).encode(passages, batch_size=64, normalize=True).astype(np.float32)
    seconds = time.perf_counter() - t
    np.save(cache, vectors)
    meta.write_text(json.dumps({"n": len(passages), "seconds": seconds}))
    print(f"embedding: {len(passages)} passages in {seconds:.0f} s ({len(passages) / seconds:.0f} passages/s)")
    return vectors


class CachedEncoder:
    """The default model, with ``encode`` answered from the cached vectors where it can."""

    def __init__(self, passages: list[str], vectors: np.ndarray):
        from lmatlas.embeddings import encoder

        self.real = encoder(None)
        self.lookup = {p: i for i, p in enumerate(passages)}
        self.vectors = vectors
        self.dim, self.max_seq_length = self.real.dim, self.real.max_seq_length
        self.token_counts = self.real.token_counts

    def encode(self, texts, batch_size=32, normalize=True):
        missing = [t for t in texts if t not in self.lookup]
        fresh = dict(zip(missing, self.real.encode(missing, batch_size=batch_size, normalize=True))) if missing else {}
        return np.stack([self.vectors[self.lookup[t]] if t in self.lookup else fresh[t] for t in texts])


def compare_libraries(vectors: np.ndarray, queries: np.ndarray) -> None:
    import hnswlib
    from usearch.index import Index as USearch

    from lmatlas import vector_index as vi

    n, dim = vectors.shape
    # The exact ten of each query over these vectors (the index's rows are numbered otherwise:
    # a long passage is cut into several).
    exact = [list(np.argsort(-(vectors @ q), kind="stable")[:10]) for q in queries]
    print(f"\nHNSW libraries (M={vi.HNSW_CONNECTIVITY}, ef_construction={vi.HNSW_EXPANSION_ADD}, ef={vi.HNSW_EXPANSION_SEARCH}, one query at a time):")
    t = time.perf_counter()
    u = USearch(ndim=dim, metric="ip", dtype="f32", connectivity=vi.HNSW_CONNECTIVITY,
                expansion_add=vi.HNSW_EXPANSION_ADD, expansion_search=vi.HNSW_EXPANSION_SEARCH)
    u.add(np.arange(n, dtype=np.uint64), vectors, threads=0)
    u_build = time.perf_counter() - t
    t = time.perf_counter()
    h = hnswlib.Index(space="ip", dim=dim)
    h.init_index(max_elements=n, ef_construction=vi.HNSW_EXPANSION_ADD, M=vi.HNSW_CONNECTIVITY)
    h.add_items(vectors, np.arange(n))
    h.set_ef(vi.HNSW_EXPANSION_SEARCH)
    h_build = time.perf_counter() - t
    for name, build, search in (
        ("usearch", u_build, lambda q: [int(k) for k in u.search(q, 10).keys]),
        ("hnswlib", h_build, lambda q: [int(k) for k in h.knn_query(q, k=10)[0][0]]),
    ):
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            found.append(search(q))
            times.append(time.perf_counter() - t)
        print(f"  {name:8} build {build:6.1f} s   {percentiles(times)}   recall@10 {recall(found, exact):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "search-scale-vectors.npy")
    ap.add_argument("--libraries-only", action="store_true", help="only the USearch / hnswlib comparison")
    args = ap.parse_args()

    import lmatlas.embeddings
    from lmatlas import vector_index as vi
    from lmatlas.embeddings import encoder
    from lmatlas.search import Index

    passages = data.passages(args.n)
    vectors = embed_cached(passages, args.cache)
    questions = [b for _, b in __import__("search_eval").paraphrase_pairs(0.0)][:300]
    qvecs = encoder(None).encode(questions, normalize=True).astype(np.float32)
    if args.libraries_only:
        return compare_libraries(vectors, qvecs)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "passages.jsonl"
        corpus.write_text("".join(json.dumps({"text": p}) + "\n" for p in passages), encoding="utf-8")
        cached = CachedEncoder(passages, vectors)
        real_encoder = lmatlas.embeddings.encoder
        lmatlas.embeddings.encoder = lambda model=None: cached if model is None else real_encoder(model)
        folder = Path(tmp) / "index"
        t = time.perf_counter()
        stats = Index(folder, ann_min_rows=min(vi.ANN_MIN_ROWS, len(passages) // 2)).build([corpus], text_field="text")
        build = time.perf_counter() - t
        lmatlas.embeddings.encoder = real_encoder
        manifest = json.loads((folder / "manifest.json").read_text())
        print(f"\nindex build of {stats['chunks']} passages (embedding excluded): {build:.1f} s")
        for key in ("vectors", "lexical", "graph"):
            print(f"  {key:8} {manifest[key]:24} {folder_size(folder / manifest[key]) / 1e6:8.1f} MB")
        print(f"  total {folder_size(folder) / 1e6:.1f} MB")

        # The vector search alone, memory-mapped as a query reads it.
        mm = vi.open_rows(folder / manifest["vectors"], manifest["rows"], manifest["dim"])
        live = np.ones(manifest["rows"], dtype=bool)
        exact_times, approx_times, exact, approx = [], [], [], []
        for q in qvecs:
            t = time.perf_counter()
            exact.append([r for r, _ in vi.exact_top(mm, q, live, 10)])
            exact_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            approx.append([r for r, _ in vi.graph_top(folder / manifest["graph"], manifest["dim"], q, 10)])
            approx_times.append(time.perf_counter() - t)
        print(f"\nvector search, {len(qvecs)} real queries, k=10:")
        print(f"  exact (memory-mapped matrix product) {percentiles(exact_times)}")
        print(f"  HNSW graph (USearch, memory-mapped)  {percentiles(approx_times)}   recall@10 {recall(approx, exact):.3f}")

        index = Index(folder)
        print("\nwhole queries (Index.query: embedding the question, ranking, passages and snippets):")
        for mode, exact_flag in (("semantic", True), ("semantic", False), ("lexical", False), ("hybrid", True), ("hybrid", False)):
            times = []
            for q in questions[:100]:
                t = time.perf_counter()
                index.query(q, k=10, mode=mode, exact=exact_flag)
                times.append(time.perf_counter() - t)
            label = f"{mode}{' (exact)' if exact_flag else ''}"
            print(f"  {label:18} {percentiles(times)}")

        # Incremental: one more file of 1,000 passages, then a rebuild.
        extra = Path(tmp) / "more.txt"
        extra.write_text("\n\n".join(questions[:300]), encoding="utf-8")
        t = time.perf_counter()
        stats = Index(folder, ann_min_rows=min(vi.ANN_MIN_ROWS, len(passages) // 2)).build([corpus, extra], text_field="text")
        print(f"\nrebuild adding one file ({stats['embedded']} embedded, {stats['reused']} unchanged): {time.perf_counter() - t:.1f} s")

    compare_libraries(vectors, qvecs)


if __name__ == "__main__":
    main()
