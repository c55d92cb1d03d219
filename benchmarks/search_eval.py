"""Retrieval quality of `lmatlas search`: semantic, lexical (BM25) and hybrid ranking, and the two
ways of fusing them, on real text.

The corpus, one passage a record of a JSON Lines file indexed with `--text-field text`:
Shakespeare speeches, SST-2 sentences, and the first sentences of STS-B pairs that annotators
scored as paraphrases (>= 4 of 5). Two kinds of queries, each with one right passage:

- keywords: a few words taken from a passage (in random order, stop words left out) — what
  people type when they remember a line;
- paraphrases: the second sentence of the STS-B pair, written by other people — the same
  meaning in other words: pairs scored >= 3.5 of 5 whose content words (their first five
  letters, a crude stem) overlap by at most a third (Jaccard); most STS-B pairs repeat each
  other's words, which no one needs meaning for.

Prints top-1 (the right passage first) and MRR@10 (1/rank when in the first ten, else 0) for
each mode and query kind, and for the fusions: reciprocal-rank fusion (the default of `--mode
hybrid`) and normalised weighted sums.

    python benchmarks/search_eval.py [--passages 3000] [--queries 460] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import tempfile
import time
from pathlib import Path

import _search_corpus as data

STOP = set(
    "a an and are as at be but by for from had has have he her his i if in into is it its me my no not of on or "
    "our she so that the their them then there these they this to was we were what when which who will with you "
    "your thou thee thy shall s t".split()
)


def content_stems(text: str) -> set[str]:
    return {w.lower()[:5] for w in re.findall(r"[A-Za-z]+", text) if w.lower() not in STOP and len(w) > 2}


def paraphrase_pairs(min_score: float = 3.5, max_overlap: float = 1.0) -> list[tuple[str, str]]:
    out = []
    with open(data.DATA / "stsb" / "train.tsv", encoding="utf-8") as f:
        for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            a, b = r[7].strip(), r[8].strip()
            sa, sb = content_stems(a), content_stems(b)
            overlap = len(sa & sb) / max(1, len(sa | sb))
            if float(r[9]) >= min_score and a.lower() != b.lower() and overlap <= max_overlap:
                out.append((a, b))
    return out


def keywords(text: str, rng: random.Random, n: int) -> str | None:
    words = [w for w in re.findall(r"[A-Za-z']+", text) if w.lower() not in STOP and len(w) > 2]
    words = list(dict.fromkeys(words))
    if len(words) < n:
        return None
    return " ".join(rng.sample(words, n))


def build_task(n_passages: int, n_queries: int, seed: int):
    rng = random.Random(seed)
    speeches = [s for s in data.shakespeare_speeches() if 80 <= len(s) <= 700]
    sst = [s for s in data.sst2() if len(s.split()) >= 8]
    pairs = list(dict(paraphrase_pairs(3.5, 1 / 3)).items())
    others = [a for a, _ in paraphrase_pairs(0.0) if a not in dict(pairs)]  # distractors of the same style
    rng.shuffle(speeches), rng.shuffle(sst), rng.shuffle(pairs), rng.shuffle(others)
    third = n_passages // 3
    targets = [a for a, _ in pairs[: n_queries - n_queries // 2]]
    passages = list(dict.fromkeys(speeches[:third] + sst[:third] + targets + others[: n_passages - 2 * third - len(targets)]))
    position = {p: i for i, p in enumerate(passages)}
    queries = []  # (kind, query, index of the right passage)
    half = n_queries // 2
    for p in rng.sample(speeches[:third] + sst[:third], len(speeches[:third] + sst[:third])):
        if len([q for q in queries if q[0] == "keywords"]) >= half:
            break
        q = keywords(p, rng, 3 if len(p) < 200 else 4)
        if q:
            queries.append(("keywords", q, position[p]))
    for a, b in pairs[: n_queries - half]:
        queries.append(("paraphrase", b, position[a]))
    return passages, queries


def default_fusion_name() -> str:
    from lmatlas import search

    return "rrf" if search.FUSION == "rrf" else f"weighted, semantic {search.SEMANTIC_WEIGHT}"


def rank_of(hits: list[int], right: int) -> int | None:
    return hits.index(right) + 1 if right in hits else None


def scores(ranks: list[int | None]) -> tuple[float, float]:
    top1 = sum(r == 1 for r in ranks) / len(ranks)
    mrr = sum(1 / r for r in ranks if r is not None and r <= 10) / len(ranks)
    return top1, mrr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=3000)
    ap.add_argument("--queries", type=int, default=460)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from lmatlas.search import CANDIDATES, Index, fuse

    default = f"hybrid ({default_fusion_name()})"

    passages, queries = build_task(args.passages, args.queries, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": p}) + "\n" for p in passages), encoding="utf-8")
        index = Index(Path(tmp) / "index")
        t = time.perf_counter()
        index.build([corpus], text_field="text")
        print(f"indexed {len(passages)} passages in {time.perf_counter() - t:.1f} s; {len(queries)} queries "
              f"({sum(k == 'keywords' for k, _, _ in queries)} keywords, {sum(k == 'paraphrase' for k, _, _ in queries)} paraphrases)")

        def doc(hit) -> int:
            return hit.line - 1  # the record's line in the JSON Lines file

        runs: dict[str, list[list[int]]] = {}
        fusions = {"hybrid (rrf)": ("rrf", None)}
        fusions.update({f"hybrid (weighted, semantic {w})": ("weighted", [w, 1 - w]) for w in (0.2, 0.3, 0.4, 0.5, 0.6)})
        checked = 0
        for i, (kind, q, right) in enumerate(queries):
            sem = [(doc(h), h.score) for h in index.query(q, k=CANDIDATES, mode="semantic")]
            lex = [(doc(h), h.score) for h in index.query(q, k=CANDIDATES, mode="lexical")] if re.search(r"\w", q) else []
            runs.setdefault("semantic", []).append([d for d, _ in sem])
            runs.setdefault("lexical", []).append([d for d, _ in lex])
            for name, (how, weights) in fusions.items():
                runs.setdefault(name, []).append([d for d, _ in fuse([sem, lex], how, weights)])
            if i % 10 == 0:  # the fusion here is the one `--mode hybrid` runs: check it on a tenth
                assert [doc(h) for h in index.query(q, k=10)] == runs[default][-1][:10]
                checked += 1
        print(f"(Index.query --mode hybrid gave the same ten as the fusion below on all {checked} queries checked)")

    kinds = ["keywords", "paraphrase"]
    print(f"\n{'ranking':34} " + " ".join(f"{k + ' top-1':>17} {k + ' MRR@10':>18}" for k in kinds + ["all"]))
    for name, results in runs.items():
        cells = []
        for kind in kinds + ["all"]:
            ranks = [rank_of(r[:10], right) for r, (kd, _, right) in zip(results, queries) if kind in ("all", kd)]
            top1, mrr = scores(ranks)
            cells.append(f"{top1:17.3f} {mrr:18.3f}")
        print(f"{name + (' *' if name == default else ''):34} " + " ".join(cells))
    print("* the fusion of `--mode hybrid`")


if __name__ == "__main__":
    main()
