"""`lmatlas tokenizer train --data FILES --kind KIND --vocab-size N --out DIR`: train a tokenizer."""

from __future__ import annotations

from ..errors import LmatlasError
from ._io import check_output_folder


HELP = "train a tokenizer (char, BPE, byte-level BPE, WordPiece, unigram) on text files"
DESCRIPTION = (
    "Tokenizer tools. `lmatlas tokenizer train` learns a vocabulary from text files and writes "
    "a folder (tokenizer.json, tokenizer_config.json) that lmatlas and transformers both load."
)


def arguments(p) -> None:
    """The arguments of `lmatlas tokenizer`, on its parser (made by ``lmatlas.cli``)."""
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="COMMAND", parser_class=type(p))
    t = tsub.add_parser("train", help="learn a vocabulary from text files",
                        description="Learn a tokenizer from --data and write it to --out.")
    t.add_argument("--data", nargs="+", required=True, help="UTF-8 text files")
    t.add_argument("--kind", required=True, choices=["char", "bpe", "byte-bpe", "wordpiece", "unigram"])
    t.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (not needed for char)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--special-tokens", default=None,
                   help="comma-separated special tokens (default: the kind's usual ones, e.g. [PAD],[UNK],[CLS],[SEP],[MASK])")
    t.add_argument("--min-frequency", type=int, default=2, help="merges and pieces seen fewer times are dropped")
    t.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run(args) -> int:
    from ..tokenizer import load_tokenizer
    from ..training.fields import FieldError
    from ..training.tokenizer_trainer import train_tokenizer

    if args.vocab_size is not None and args.vocab_size < 1:
        raise LmatlasError(f"--vocab-size must be positive, not {args.vocab_size}")
    check_output_folder(args.out, "--out")
    specials = None
    if args.special_tokens is not None:
        specials = [s.strip() for s in args.special_tokens.split(",") if s.strip()]
    try:
        out = train_tokenizer(args.data, args.kind, args.out, args.vocab_size, specials, args.min_frequency)
    except FieldError as e:  # named by the flag that sets it
        raise LmatlasError(e.naming(lambda field: "--" + field.replace("_", "-"))) from None
    tok = load_tokenizer(out)
    print(f"{out}: {args.kind} tokenizer with {len(tok)} tokens")
    return 0
