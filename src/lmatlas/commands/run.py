"""`lmatlas run TASK`: a task pipeline over texts from arguments, a file or standard input.

One JSON line out per input: ``{"input": ..., "output": ...}`` (with ``"line"`` for inputs read
from a file), or ``{"line": N, "error": ...}`` for an input that cannot run — a malformed JSON
line, a fill-mask text without a mask — while the other lines still run; the exit status is
then 1.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import types
from pathlib import Path
from typing import Any, Iterator

from ..errors import LmatlasError
from ._flags import FLAGS, dashed, in_flags
from ._generation import add_quantization_options, quantization
from ._io import check_output_file
from ._ray import FLAGS as RAY_FLAGS, add_ray_options, ray_options
from ._run_inputs import FORMATS, image_items, records, source_name

# The fields a task's inputs have, and the column each is read from unless --column says.
FIELDS = {
    "question-answering": ("question", "context"),
    "text-classification": ("text", "text_pair"),
    "sentence-similarity": ("source_sentence", "sentences"),
}


HELP = "run a task (fill-mask, ner, question-answering, summarization, translation, ...) over texts or images"
DESCRIPTION = (
    "Run a task pipeline — transformers' task names, options and output schemas — over "
    "texts given as arguments, in a file (.txt: one per line; .jsonl; .csv; .tsv) or on standard "
    "input, or over image files and folders of them (the image tasks), and write one JSON line per input."
)


def arguments(p) -> None:
    """The arguments of `lmatlas run`, on its parser (made by ``lmatlas.cli``)."""
    from ..pipelines import TASKS, task_names, task_options

    p.epilog = _epilog(TASKS, task_options)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    # Optional to argparse only: its intermixed parse would otherwise call TEXT required too.
    p.add_argument("task", metavar="TASK", nargs="?", help="one of: " + ", ".join(task_names()))
    p.add_argument("texts", nargs="*", metavar="TEXT", help="inputs (default: --input, or standard input)")
    p.add_argument("--model", "-m", default=None, help="model folder or hub id (default: all-MiniLM-L6-v2, for the tasks it serves)")
    p.add_argument("--input", "-i", metavar="FILE", help=".txt, .jsonl, .csv or .tsv file; - for standard input")
    p.add_argument("--format", choices=sorted(set(FORMATS.values())), help="the input's format when its name does not say")
    p.add_argument(
        "--column", "-c", action="append", default=[], metavar="[FIELD=]COLUMN",
        help="the column (or JSON key) holding the text (default: text; text-generation also reads a JSON "
        "line's \"messages\", a chat); FIELD=COLUMN for the other fields: "
        "question, context, text_pair, source_sentence, sentences",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write the JSON lines here (default: standard output)")
    p.add_argument("--batch-size", type=int, default=8, help="inputs per model call (default 8)")
    p.add_argument("--context", help="question-answering: the context of every question")
    p.add_argument("--source", help="sentence-similarity: compare every input with this sentence")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="weights' precision")
    add_quantization_options(p)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar for file inputs (default: when standard error is a terminal)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="any task option, VALUE read as JSON when it can be (e.g. --option tokenizer_kwargs='{\"truncation\": true}')")
    add_ray_options(p)
    group = p.add_argument_group("task options (see the list below for which task takes which)")
    seen: dict[str, str] = {}
    for name, (opt, text) in _shared_options(TASKS, task_options).items():
        kind = _cli_kind(opt.cli)
        seen[name] = kind
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            group.add_argument(flag, dest=f"opt_{name}", action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind == "list":
            group.add_argument(flag, dest=f"opt_{name}", action="append", default=None, metavar="A,B",
                               help=text + " (comma-separated; repeatable)")
        else:
            group.add_argument(flag, dest=f"opt_{name}", default=None, metavar="VALUE", help=text)
    p.set_defaults(func=run, option_kinds=seen, usage_error=p.error,
                   flags={**dashed(seen), "candidate_labels": "--candidate-labels", **RAY_FLAGS})
    # TEXT arguments may come before, after or between the options.
    p.parse_known_args = types.MethodType(_parse_intermixed, p)


def _shared_options(tasks, task_options) -> dict:
    """Each option name once: (its first task's Option, its help). A name that means different
    things to different tasks (``--truncation``, ``--return-tensors``) says what it does for each."""
    helps: dict[str, dict[str, list[str]]] = {}
    first: dict = {}
    for task in tasks:
        for name, opt in task_options(task).items():
            first.setdefault(name, opt)
            helps.setdefault(name, {}).setdefault(opt.help, []).append(task)
    out = {}
    for name, opt in first.items():
        by_help = helps[name]
        if len(by_help) == 1:
            out[name] = (opt, opt.help)
        else:
            out[name] = (opt, "; ".join(f"{', '.join(ts)}: {h}" for h, ts in by_help.items()))
    return out


def _parse_intermixed(self, args=None, namespace=None):
    # argparse fills a "*" positional at the first chance, so `run TASK --opt X TEXT` would
    # leave TEXT unrecognised; the intermixed parse collects positionals around options.
    if getattr(self, "_intermixing", False):
        return argparse.ArgumentParser.parse_known_args(self, args, namespace)
    self._intermixing = True
    try:
        return self.parse_known_intermixed_args(args, namespace)
    finally:
        self._intermixing = False


def _cli_kind(kind: str) -> str:
    return {"int": "json", "float": "json", "int_or_all": "json"}.get(kind, kind)


def _epilog(tasks, task_options) -> str:
    lines = ["tasks and their options:"]
    for task, spec in tasks.items():
        options = ", ".join("--" + n.replace("_", "-") for n in task_options(task))
        note = " [default model]" if spec.default else ""
        lines.append(f"  {task}{note}: {options or '(none)'}")
    lines += [
        "",
        "examples:",
        "  lmatlas run feature-extraction --pool 'A sentence to embed.'",
        "  lmatlas run zero-shot-classification --candidate-labels cinema,food,politics 'I loved the film.'",
        "  lmatlas run sentence-similarity 'A man plays guitar.' 'Someone plays music.' 'A cat sleeps.'",
        "  lmatlas run fill-mask -m google-bert/bert-base-uncased 'Paris is the [MASK] of France.'",
        "  lmatlas run ner -m dslim/bert-base-NER --aggregation-strategy simple -i news.txt -o ents.jsonl",
        "  lmatlas run question-answering -m deepset/roberta-base-squad2 --context \"$(cat doc.txt)\" 'Who?'",
        "  lmatlas run text-classification -m MODEL -i sst2/dev.tsv --column sentence -o preds.jsonl",
        "  lmatlas run summarization -m facebook/bart-large-cnn -i articles.txt -o summaries.jsonl",
        "  lmatlas run text-generation -m MODEL -i chats.jsonl --max-new-tokens 64  # {\"messages\": [...]} lines",
        "  lmatlas run translation_en_to_de -m google-t5/t5-small 'The house is wonderful.'",
        "  lmatlas run translation -m facebook/mbart-large-50-many-to-many-mmt --src-lang en_XX --tgt-lang fr_XX 'Hello.'",
        "  lmatlas run image-classification -m google/vit-base-patch16-224 --top-k 3 photo.jpg photos/",
        "  lmatlas run zero-shot-image-classification -m openai/clip-vit-base-patch32 --candidate-labels cat,dog photos/",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def run(args) -> int:
    from ..pipelines import TASKS, canonical, pipeline
    from ..pipelines.base import jsonable

    if args.task is None:
        args.usage_error("the following argument is required: TASK")
    task = canonical(args.task)
    if args.batch_size < 1:
        raise LmatlasError(f"--batch-size must be at least 1, not {args.batch_size}")
    options = _task_options(args)
    columns = _columns(args.column)
    out_path = _check_output(args.output)
    ray = ray_options(args, scratch=out_path.parent if out_path else None)
    if TASKS[task].images:
        items, from_file = image_items(args), False
    else:
        rows, from_file, header = records(args)
        if header is not None:
            _check_header(task, header, columns, args)
        items = list(_items(task, rows, columns, args))
    if not items:
        raise LmatlasError("no inputs: every line is empty")
    # On Ray the actors make the pipeline; here it is made once.
    pipe = None if ray else pipeline(args.task, args.model, dtype=args.dtype, batch_size=args.batch_size,
                                     **quantization(args), **options)
    if pipe is not None and task == "text-generation" and any(isinstance(item[3], list) for item in items):
        # Chats need the model's template: one error for the file, not the same one per line.
        from ..chat import template_of

        template_of(pipe.tokenizer, options.get("chat_template"))

    out = io.StringIO() if out_path else sys.stdout
    failures = 0
    bar = _progress(len(items), from_file, args.progress)
    try:
        for chunk, results in _results(items, args, options, pipe, ray, bar):
            for (line, record, _, _), (value, err) in zip(chunk, results):
                if err is not None:
                    failures += 1
                    where = f"{source_name(args)} line {line}: " if line is not None else ""
                    err = in_flags(err, {**FLAGS, **args.flags})
                    print(f"lmatlas: error: {where}{err}", file=sys.stderr)
                    row = {"line": line, "error": err} if line is not None else {"input": record, "error": err}
                else:
                    value = value[0] if task == "sentence-similarity" and args.source is not None else value
                    row = {"input": record, "output": jsonable(value)}
                    if line is not None:
                        row = {"line": line, **row}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            if out is sys.stdout:
                sys.stdout.flush()
    finally:
        if bar is not None:
            bar.close()
    if out_path:
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(out.getvalue(), encoding="utf-8")
        tmp.replace(out_path)
        done = len(items) - failures
        print(f"{done} result(s) written to {out_path}" + (f"; {failures} input(s) failed" if failures else ""),
              file=sys.stderr)
    return 1 if failures else 0


def _results(items: list, args, options: dict, pipe, ray, bar) -> Iterator[tuple[list, list]]:
    """Each chunk of --batch-size items with its (result, error) pairs: run here a chunk at a
    time (the output grows as it goes), or on Ray all at once (the library makes the same model
    calls)."""
    from ..pipelines.base import call_each

    done = None
    if ray is not None:
        from ..ray_data import run_task

        done = run_task(args.task, [c[3] if c[2] is None else None for c in items], args.model, ray=ray,
                        batch_size=args.batch_size, dtype=args.dtype, progress=bar or False,
                        **quantization(args), **options)
    for lo in range(0, len(items), args.batch_size):
        chunk = items[lo : lo + args.batch_size]
        if done is not None:
            results = done[lo : lo + args.batch_size]
        else:
            ready = iter(call_each(pipe, [c[3] for c in chunk if c[2] is None]) if any(c[2] is None for c in chunk) else ())
            results = [None if c[2] is not None else next(ready) for c in chunk]
            if bar is not None:
                bar.update(len(chunk))
        # A line that could not be read keeps its reason.
        yield chunk, [(None, c[2]) if c[2] is not None else r for c, r in zip(chunk, results)]


# -- options ------------------------------------------------------------------------------------


def _task_options(args) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, kind in args.option_kinds.items():
        value = getattr(args, f"opt_{name}", None)
        if value is None:
            continue
        if kind == "list":
            value = [part for v in value for part in v.split(",") if part != ""]
        elif kind == "json":
            value = _json_or_text(value)
        options[name] = value
    for text in args.option:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise LmatlasError(f"--option {text!r}: write NAME=VALUE")
        options[name.strip().replace("-", "_")] = _json_or_text(value)
    return options


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _columns(specs: list[str]) -> dict[str, str]:
    columns: dict[str, str] = {}
    for spec in specs:
        field, sep, column = spec.partition("=")
        if not sep:
            field, column = "text", spec
        if not field or not column:
            raise LmatlasError(f"--column {spec!r}: write COLUMN or FIELD=COLUMN")
        columns[field] = column
    return columns


def _check_output(output: str | None) -> Path | None:
    return None if output is None else check_output_file(output, "--output")


# -- inputs -------------------------------------------------------------------------------------

# A record: (line number or None, the record as read — a string or a dict — or None, and an
# error message for a line that could not be read).


def _check_header(task: str, header: list[str], columns: dict[str, str], args) -> None:
    """A column that the whole table lacks is one error, not one per line."""
    if task == "question-answering":
        needed = [("question", "text")] + ([] if args.context is not None else [("context",)])
    elif task == "sentence-similarity":
        needed = [("text",)] if args.source is not None else [("source_sentence",), ("sentences",)]
    else:
        needed = [("text",)]
    for choices in needed:
        names = [columns.get(field, field) for field in choices]
        if not any(name in header for name in names):
            field = choices[0]
            flag = "--column COLUMN" if field == "text" else f"--column {field}=COLUMN"
            what = " or ".join(repr(n) for n in names)
            raise LmatlasError(
                f"{args.input}: no {what} column (the columns are: {', '.join(header)}); choose one with {flag}"
            )


def _items(task: str, records, columns: dict[str, str], args) -> Iterator[tuple]:
    """(line, record, error, pipeline input) for each record."""
    fields = FIELDS.get(task, ("text",))
    if task == "sentence-similarity" and args.source is None and args.texts:
        # Arguments without --source: the first is the source, the others are compared with it.
        if len(args.texts) < 2:
            raise LmatlasError("sentence-similarity: give the source sentence and at least one sentence to compare")
        item = {"source_sentence": args.texts[0], "sentences": list(args.texts[1:])}
        yield None, item, None, item
        return
    for line, record, problem in records:
        if problem is not None:
            yield line, None, problem, None
            continue
        try:
            yield line, record, None, _item(task, fields, record, columns, args)
        except LmatlasError as e:
            yield line, record, str(e), None


def _field(record: Any, field: str, columns: dict[str, str], required: bool = True) -> Any:
    """A field of a JSON object or table row, from the column --column names (default: the
    field's own name); a plain text line is its own text."""
    if isinstance(record, str):
        return record
    column = columns.get(field, field)
    if record.get(column) is not None:
        return record[column]
    if required:
        known = ", ".join(map(str, record)) or "none"
        flag = "--column COLUMN" if field == "text" else f"--column {field}=COLUMN"
        raise LmatlasError(f"no {column!r} column (the columns are: {known}); choose one with {flag}")
    return None


def _item(task: str, fields: tuple, record: Any, columns: dict[str, str], args) -> Any:
    if task == "question-answering":
        if isinstance(record, str):
            question, context = record, None
        else:
            question = _field(record, "question", columns, required=False)
            if question is None:
                question = _field(record, "text", columns, required=False)
            if question is None:
                _field(record, "question", columns)  # raises, naming the columns there are
            context = _field(record, "context", columns, required=False)
        if context is None:
            context = args.context
        if context is None:
            raise LmatlasError("the question has no context: give --context, or a 'context' column in the input")
        return {"question": question, "context": context}
    if task == "sentence-similarity":
        if args.source is not None:
            return {"source_sentence": args.source, "sentences": [_field(record, "text", columns)]}
        if isinstance(record, str):
            raise LmatlasError("sentence-similarity needs --source, or inputs with source_sentence and sentences")
        return {
            "source_sentence": _field(record, "source_sentence", columns),
            "sentences": _field(record, "sentences", columns),
        }
    # Chat files put each conversation under "messages": such lines need no --column.
    chat_line = isinstance(record, dict) and record.get("text") is None and record.get("messages") is not None
    if task == "text-generation" and "text" not in columns and chat_line:
        return record["messages"]
    text = _field(record, "text", columns)
    if task == "text-classification" and isinstance(record, dict):
        pair = _field(record, "text_pair", columns, required=False)
        if pair is not None:
            return {"text": text, "text_pair": pair}
    return text


# -- output -------------------------------------------------------------------------------------


def _progress(total: int, from_file: bool, wanted: bool | None):
    show = wanted if wanted is not None else (from_file and sys.stderr.isatty())
    if not show:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="input", file=sys.stderr, dynamic_ncols=True)
