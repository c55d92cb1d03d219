"""`lmatlas search build|query`: a hybrid (BM25 + semantic) search engine over documents."""

from __future__ import annotations

import os
import sys

from ._io import add_progress_option, progress_wanted
from ._ray import FLAGS as RAY_FLAGS, add_ray_options, ray_options

HELP = "build and query a search index of documents (text, Markdown, HTML, PDF, JSON Lines, source)"


def arguments(p) -> None:
    """The arguments of `lmatlas search`, on its parser (made by ``lmatlas.cli``)."""
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="index files and folders (re-embeds only changed files)")
    b.add_argument("index", help="index folder (created if absent)")
    b.add_argument("--from", dest="paths", nargs="+", required=True, metavar="PATH", help="files and folders to index")
    b.add_argument("--model", "-m", default=None, help="model folder or hub id (default: all-MiniLM-L6-v2)")
    b.add_argument("--text-field", default=None, metavar="FIELD", help="the field of a .jsonl record that holds its text")
    b.add_argument("--batch-size", type=int, default=32)
    add_progress_option(b)
    add_ray_options(b)
    b.set_defaults(func=build, flags=RAY_FLAGS)
    q = actions.add_parser("query", help="the passages that best answer a question")
    q.add_argument("index", help="index folder")
    q.add_argument("question")
    q.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    q.add_argument("--mode", choices=["hybrid", "semantic", "lexical"], default="hybrid",
                   help="rank by words and meaning fused (default), by meaning, or by words (BM25)")
    q.add_argument("--path", default=None, metavar="GLOB", help="only passages of files matching GLOB (e.g. 'docs/*.md')")
    q.add_argument("--rerank", default=None, metavar="MODEL", help="re-score the candidates with this cross-encoder")
    q.add_argument("--exact", action="store_true", help="score every passage even where the index has an HNSW graph")
    q.set_defaults(func=query)


def build(args) -> int:
    from ..search import Index

    stats = Index(args.index).build(args.paths, model=args.model, batch_size=args.batch_size, text_field=args.text_field,
                                    progress=progress_wanted(args), ray=ray_options(args))
    for source, reason in stats["skipped"]:
        print(f"skipped {_shown(source)}: {reason}", file=sys.stderr)
    print(
        f"indexed {stats['chunks']} passages in {args.index}: {stats['embedded']} file(s) embedded, "
        f"{stats['reused']} unchanged, {stats['dropped']} removed, {len(stats['skipped'])} skipped"
    )
    return 0


def query(args) -> int:
    from ..search import Index

    hits = Index(args.index).query(
        args.question, k=args.k, mode=args.mode, path=args.path, rerank=args.rerank, exact=args.exact
    )
    bold = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for rank, hit in enumerate(hits, start=1):
        where = f"{_shown(hit.source)}:{hit.line}" if hit.page is None else f"{_shown(hit.source)} page {hit.page}:{hit.line}"
        print(f"{rank}. {hit.score:.3f}  {where}")
        print("   " + highlighted(hit.snippet, hit.highlights, bold))
    return 0


def highlighted(snippet: str, spans: list[tuple[int, int]], bold: bool) -> str:
    """The snippet on one line, the query's words in bold on a terminal, else in **stars**."""
    on, off = ("\033[1m", "\033[0m") if bold else ("**", "**")
    out, at = [], 0
    for start, end in sorted(spans):
        out += [snippet[at:start], on, snippet[start:end], off]
        at = end
    out.append(snippet[at:])
    return " ".join("".join(out).split())


def _shown(source: str) -> str:
    """A source path relative to the working folder when it lies inside it."""
    rel = os.path.relpath(source)
    return source if rel.startswith("..") else rel
