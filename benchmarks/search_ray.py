"""`lmatlas search build` in one process against `search build --ray` (Ray Data, a pool of actors
on a Ray instance started on this machine for the build), on the same real passages: wall time of
each build (the Ray one including starting and stopping Ray, and its actors loading the model),
the largest difference between the two indexes' vectors, and whether their top-5 hits agree.

The passages (benchmarks/_search_corpus.py: SST-2, STS-B, Shakespeare) are written as one JSON
Lines file, a passage per record. The one-process build runs at torch's default threads (one per
core) and on one thread; Ray's actors run a thread each. The builds alternate (`--repeats`), the
best of each kept.

    python benchmarks/search_ray.py [--n 3000] [--actors N] [--cpus-per-actor 0.5] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import _search_corpus as data


def vectors(folder: Path) -> np.ndarray:
    manifest = json.loads((folder / "manifest.json").read_text())
    return np.fromfile(folder / manifest["vectors"], dtype=np.float32).reshape(manifest["rows"], manifest["dim"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="passages (default 3000)")
    parser.add_argument("--actors", type=int, default=None, help="Ray actors (default: one per CPU)")
    parser.add_argument("--cpus-per-actor", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=256, help="passages an actor takes at a time")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from lmatlas.ray_data import RayOptions
    from lmatlas.search import Index

    work = Path(tempfile.mkdtemp(prefix="search-ray-"))
    try:
        corpus = work / "passages.jsonl"
        passages = data.passages(args.n)
        corpus.write_text("".join(json.dumps({"text": p}) + "\n" for p in passages), encoding="utf-8")
        ray = RayOptions(actors=args.actors, cpus_per_actor=args.cpus_per_actor, rows_per_batch=args.batch_size)
        threads = torch.get_num_threads()
        runs = [(f"one process, {threads} threads", None, threads), ("one process, 1 thread", None, 1), ("Ray", ray, threads)]
        best = {name: float("inf") for name, _, _ in runs}
        for r in range(args.repeats):
            for i, (name, option, n) in enumerate(runs):
                torch.set_num_threads(n)
                folder = work / f"{i}-{r}"
                t = time.perf_counter()
                stats = Index(folder).build([corpus], text_field="text", ray=option)
                seconds = time.perf_counter() - t
                best[name] = min(best[name], seconds)
                print(f"{name:22s} build {r + 1}: {seconds:6.1f} s ({stats['chunks']} passages, "
                      f"{stats['chunks'] / seconds:.0f} passages/s)", flush=True)
        torch.set_num_threads(threads)
        here, there = work / "0-0", work / "2-0"
        diff = float(np.abs(vectors(here) - vectors(there)).max())
        questions = data.stsb()[1:400:40]
        same = sum([(h.source, h.line) for h in Index(here).query(q, k=5, mode="semantic")]
                   == [(h.source, h.line) for h in Index(there).query(q, k=5, mode="semantic")] for q in questions)
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
        print(f"\n{len(passages)} passages on {os.cpu_count()} CPUs ({cpu}), best of {args.repeats}:")
        for name, seconds in best.items():
            print(f"  {name:22s} {seconds:6.1f} s  ({seconds / best[runs[0][0]]:.2f}x)")
        print(f"  largest difference between the vectors: {diff:.2e}; same top-5 for {same} of {len(questions)} questions")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
