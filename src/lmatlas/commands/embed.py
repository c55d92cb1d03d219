"""`lmatlas embed`: one text per line in, one vector per line out (.npy or .jsonl)."""

from __future__ import annotations

import json

import numpy as np

from ..errors import LmatlasError
from ..files import write_atomic
from ._io import add_model_options, add_progress_option, check_output_file, progress_wanted, read_lines
from ._ray import FLAGS as RAY_FLAGS, add_ray_options, ray_options


HELP = "sentence embeddings of a file of texts, one per line"


def arguments(p) -> None:
    """The arguments of `lmatlas embed`, on its parser (made by ``lmatlas.cli``)."""
    p.add_argument("--input", "-i", required=True, help="text file, one text per line; - for standard input")
    p.add_argument("--output", "-o", required=True, help="OUT.npy (an n x dim array) or OUT.jsonl")
    p.add_argument("--batch-size", type=int, default=32)
    add_model_options(p)
    add_progress_option(p)
    add_ray_options(p)
    p.set_defaults(func=run, flags=RAY_FLAGS)


def run(args) -> int:
    from ..embeddings import TextTooLong, embed

    out = check_output_file(args.output, "--output")
    if out.suffix not in (".npy", ".jsonl"):
        raise LmatlasError(f"--output {args.output}: the name must end in .npy or .jsonl")
    ray = ray_options(args, scratch=out.parent)
    texts = read_lines(args.input, "--input")
    try:
        vectors = embed(texts, model=args.model, batch_size=args.batch_size, truncate=args.truncate,
                        progress=progress_wanted(args), ray=ray)
    except TextTooLong as e:
        where = "standard input" if args.input == "-" else args.input
        raise LmatlasError(f"{where} line {e.index + 1}: {e.detail} (drop --no-truncate to embed its beginning)") from None
    if out.suffix == ".npy":
        write_atomic(out, lambda f: np.save(f, vectors))
    else:
        rows = (json.dumps({"text": t, "embedding": [round(float(x), 7) for x in v]}, ensure_ascii=False) + "\n"
                for t, v in zip(texts, vectors))
        write_atomic(out, lambda f: f.writelines(r.encode("utf-8") for r in rows))
    print(f"{len(texts)} embeddings of dimension {vectors.shape[1]} written to {out}")
    return 0
