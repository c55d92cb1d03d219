"""`lmatlas similarity A B`: the cosine similarity of two texts."""

from __future__ import annotations

from ..errors import LmatlasError
from ._io import add_model_options


HELP = "cosine similarity of two texts' embeddings"


def arguments(p) -> None:
    """The arguments of `lmatlas similarity`, on its parser (made by ``lmatlas.cli``)."""
    p.add_argument("text_a")
    p.add_argument("text_b")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..embeddings import encoder, cosine

    for name, text in (("first", args.text_a), ("second", args.text_b)):
        if not text.strip():
            raise LmatlasError(f"the {name} text is empty")
    vectors = encoder(args.model).encode([args.text_a, args.text_b], truncate=args.truncate)
    print(f"{float(cosine(vectors[:1], vectors[1:])[0, 0]):.4f}")
    return 0
