"""`lmatlas search build|query`: a semantic search engine over text and Markdown files."""

from __future__ import annotations

import os
import textwrap

from ._io import add_progress_option, progress_wanted


HELP = "build and query a semantic search index of text files"


def arguments(p) -> None:
    """The arguments of `lmatlas search`, on its parser (made by ``lmatlas.cli``)."""
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="index text and Markdown files and folders (re-embeds only changed files)")
    b.add_argument("index", help="index folder (created if absent)")
    b.add_argument("--from", dest="paths", nargs="+", required=True, metavar="PATH", help="files and folders to index")
    b.add_argument("--model", "-m", default=None, help="model folder or hub id (default: all-MiniLM-L6-v2)")
    b.add_argument("--batch-size", type=int, default=32)
    add_progress_option(b)
    b.set_defaults(func=build)
    q = actions.add_parser("query", help="the passages closest in meaning to a question")
    q.add_argument("index", help="index folder")
    q.add_argument("question")
    q.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    q.set_defaults(func=query)


def build(args) -> int:
    from ..search import Index

    stats = Index(args.index).build(args.paths, model=args.model, batch_size=args.batch_size,
                                    progress=progress_wanted(args))
    print(
        f"indexed {stats['chunks']} passages in {args.index}: {stats['embedded']} file(s) embedded, "
        f"{stats['reused']} unchanged, {stats['dropped']} removed"
    )
    return 0


def query(args) -> int:
    from ..search import Index

    for rank, hit in enumerate(Index(args.index).query(args.question, k=args.k), start=1):
        print(f"{rank}. {hit.score:.3f}  {_shown(hit.source)}:{hit.line}")
        snippet = " ".join(hit.text.split())
        print(textwrap.indent(textwrap.shorten(snippet, width=300, placeholder=" …"), "   "))
    return 0


def _shown(source: str) -> str:
    """A source path relative to the working folder when it lies inside it."""
    rel = os.path.relpath(source)
    return source if rel.startswith("..") else rel
