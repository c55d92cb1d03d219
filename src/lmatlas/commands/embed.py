"""`lmatlas embed`: one text per line in, one vector per line out (.npy or .jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import LmatlasError
from ._io import add_model_options, read_lines


HELP = "sentence embeddings of a file of texts, one per line"


def arguments(p) -> None:
    """The arguments of `lmatlas embed`, on its parser (made by ``lmatlas.cli``)."""
    p.add_argument("--input", "-i", required=True, help="text file, one text per line; - for standard input")
    p.add_argument("--output", "-o", required=True, help="OUT.npy (an n x dim array) or OUT.jsonl")
    p.add_argument("--batch-size", type=int, default=32)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..embeddings import embed

    out = Path(args.output)
    if out.suffix not in (".npy", ".jsonl"):
        raise LmatlasError(f"--output {args.output}: the name must end in .npy or .jsonl")
    if not out.parent.exists():
        raise LmatlasError(f"--output {args.output}: folder {out.parent} does not exist")
    texts = read_lines(args.input)
    vectors = embed(texts, model=args.model, batch_size=args.batch_size, truncate=args.truncate)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".npy":
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            for text, v in zip(texts, vectors):
                f.write(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in v]}, ensure_ascii=False))
                f.write("\n")
    tmp.replace(out)
    print(f"{len(texts)} embeddings of dimension {vectors.shape[1]} written to {out}")
    return 0
