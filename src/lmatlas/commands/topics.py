"""`lmatlas topics`: the topics of a collection of texts, named by their keywords."""

from __future__ import annotations

import json
import sys
import textwrap

from ..errors import LmatlasError
from ..files import write_text_atomic
from ._flags import dashed
from ._io import add_progress_option, check_output_file, progress_wanted


HELP = "find the topics of a collection of texts (embeddings, t-SNE, HDBSCAN, class-based TF-IDF)"
DESCRIPTION = (
    "Topic modelling after BERTopic: embed the texts, map them to two dimensions with t-SNE, "
    "cluster the map with HDBSCAN and name each topic by its class-based TF-IDF keywords. Needs "
    "scikit-learn (and matplotlib for --plot): pip install 'lmatlas[topics]'."
)


def arguments(p) -> None:
    """The arguments of `lmatlas topics`, on its parser (made by ``lmatlas.cli``)."""
    p.add_argument("--input", "-i", required=True, metavar="FILE", help=".txt (one text per line), .jsonl, .csv or .tsv; - for standard input")
    p.add_argument("--format", choices=["csv", "jsonl", "tsv", "txt"], help="the input's format when its name does not say")
    p.add_argument("--column", "-c", action="append", default=[], metavar="COLUMN", help="the column (or JSON key) holding the text (default: text)")
    p.add_argument("--model", "-m", default=None, help="sentence-embedding model folder or hub id (default: all-MiniLM-L6-v2)")
    p.add_argument("--min-topic-size", type=int, default=10, help="fewest texts in a topic (default 10)")
    p.add_argument("--min-samples", type=int, default=None, help="how dense a clump must be to count (default: a third of --min-topic-size)")
    p.add_argument("--keywords", type=int, default=10, help="keywords per topic (default 10)")
    p.add_argument("--representative", type=int, default=3, help="representative texts per topic (default 3)")
    p.add_argument("--reduce-outliers", action="store_true", help="give each outlier the nearest topic")
    p.add_argument("--seed", type=int, default=0, help="seed of the t-SNE map (default 0)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", "-o", metavar="FILE", help="write the topics and every text's topic as JSON")
    p.add_argument("--plot", metavar="FILE", help="draw the map of topics (.png, .pdf or .svg)")
    add_progress_option(p)
    p.set_defaults(func=run, texts=[], context=None, source=None,
                   flags=dashed(["min_topic_size", "min_samples", "keywords", "representative"]), flag_words=True)


def run(args) -> int:
    from ..plots import check_path
    from ..topics import find_topics, plot_topics
    from ._run_inputs import records
    from .run import _check_header, _columns, _field

    # Every output checked before the work, not after it.
    out = check_output_file(args.output, "--output") if args.output else None
    if args.plot:
        check_output_file(args.plot, "--plot")
        try:
            check_path(args.plot)
        except LmatlasError as e:
            raise LmatlasError(f"--plot {e}") from None
    columns = _columns(args.column)
    rows, _, header = records(args)
    if header is not None:
        _check_header("topics", header, columns, args)
    lines, texts = [], []
    for line, record, problem in rows:
        if problem is not None:
            print(f"lmatlas: warning: {args.input} line {line}: {problem}; left out", file=sys.stderr)
            continue
        try:
            text = _field(record, "text", columns)
        except LmatlasError as e:
            print(f"lmatlas: warning: {args.input} line {line}: {e}; left out", file=sys.stderr)
            continue
        if not isinstance(text, str) or not text.strip():
            continue
        lines.append(line)
        texts.append(text)
    if not texts:
        raise LmatlasError(f"{args.input}: no texts to model")
    result = find_topics(
        texts, model=args.model, min_topic_size=args.min_topic_size, min_samples=args.min_samples,
        keywords=args.keywords, representative=args.representative, reduce_outliers=args.reduce_outliers,
        seed=args.seed, batch_size=args.batch_size, progress=progress_wanted(args),
    )
    print(format_topics(result))
    if out is not None:
        write_text_atomic(out, json.dumps(result.to_dict(lines), ensure_ascii=False, indent=1))
        print(f"topics written to {out}", file=sys.stderr)
    if args.plot:
        plot_topics(result, args.plot)
        print(f"map drawn in {args.plot}", file=sys.stderr)
    return 0


def format_topics(result) -> str:
    rows = [f"{len([t for t in result.topics if t.topic >= 0])} topics in {len(result.texts)} texts"]
    for t in result.topics:
        name = "outliers" if t.topic < 0 else f"topic {t.topic}"
        words = ", ".join(w for w, _ in t.keywords[:8])
        rows.append(f"{name:>9}  {t.size:>5}  {words}")
        if t.representative and t.topic >= 0:
            rows.append(textwrap.indent(textwrap.shorten(t.representative[0], 100, placeholder=" …"), " " * 18))
    return "\n".join(rows)
