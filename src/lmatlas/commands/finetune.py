"""`lmatlas finetune classify|ner|qa|seq2seq --model PATH --train FILE --dev FILE --out DIR`."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import LmatlasError
from .train import add_trainer_options, trainer_config

TASKS = ("classify", "ner", "qa", "seq2seq")


def register(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a pretrained model: classify (sentences, pairs), ner (CoNLL), qa (SQuAD), seq2seq",
        description="Fine-tune a pretrained encoder with a task head and report the usual metric: accuracy and "
        "F1 (classify, which also takes a decoder such as GPT-2 or Llama, read at each text's last token), entity "
        "F1 (ner), exact match and F1 (qa), ROUGE-L (seq2seq, an encoder-decoder such as T5 or BART). The best "
        "model on --dev is kept in OUT/model.",
    )
    p.add_argument("task", choices=TASKS)
    p.add_argument("--model", "-m", default=None, help="model folder or hub id (default: all-MiniLM-L6-v2)")
    p.add_argument("--train", required=True, help="training file: TSV/CSV/JSONL (classify, seq2seq), CoNLL (ner), SQuAD JSON (qa)")
    p.add_argument("--dev", default=None, help="development file, same format; the best model on it is kept")
    p.add_argument("--out", required=True, help="output folder: model/, checkpoint-N/, log.jsonl, loss.png")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over --train (default 3); --steps overrides")
    p.add_argument("--max-length", type=int, default=None, help="tokens per input (default 128; 384 for qa)")
    g = p.add_argument_group("classify")
    g.add_argument("--format", choices=["tsv", "csv", "jsonl"], default=None, help="default: from the extension")
    g.add_argument("--text-column", default="sentence", help="(default: sentence)")
    g.add_argument("--text-pair-column", default=None, help="second text of a pair (NLI, paraphrase)")
    g.add_argument("--label-column", default="label", help="(default: label)")
    g = p.add_argument_group("seq2seq")
    g.add_argument("--source-column", default="source", help="(default: source)")
    g.add_argument("--target-column", default="target", help="(default: target)")
    g.add_argument("--source-prefix", default="", help='text put before each source, e.g. "summarize: " for T5')
    g.add_argument("--max-target-length", type=int, default=128, help="target tokens kept (default 128)")
    g.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated for the dev ROUGE-L (default 64)")
    g.add_argument("--num-beams", type=int, default=1, help="beam search for the dev outputs (default greedy)")
    g = p.add_argument_group("qa")
    g.add_argument("--stride", type=int, default=128, help="overlap of the windows over long contexts")
    g.add_argument("--null-answers", action="store_true", help="SQuAD 2.0: questions may have no answer")
    add_trainer_options(p, steps=0, lr=5e-5, batch=32)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..checkpoint import resolve
    from ..embeddings import default_model_path
    from ..tokenizer import load_tokenizer
    from ..training import distributed as dist_
    from ..training.trainer import Trainer

    if args.epochs <= 0 and not args.steps:
        raise LmatlasError(f"--epochs must be positive, not {args.epochs}")
    folder = default_model_path() if args.model is None else resolve(args.model)
    tokenizer = load_tokenizer(folder)
    max_length = args.max_length or (384 if args.task == "qa" else 128)
    if max_length < 8:
        raise LmatlasError(f"--max-length must be at least 8, not {max_length}")
    ctx = dist_.setup(args.device)
    try:
        import torch

        torch.manual_seed(args.seed)
        task = build_task(args, folder, tokenizer, max_length)
        per_step = args.batch_size * args.grad_accum * ctx.world
        epoch_steps = max(1, math.ceil(len(task.train_rows) / per_step))
        steps = args.steps or max(1, round(args.epochs * epoch_steps))
        args.steps = steps
        if not args.eval_every and args.dev:
            args.eval_every = min(epoch_steps, steps)
        if ctx.rank:
            torch.manual_seed(args.seed + ctx.rank)
        summary = Trainer(task, trainer_config(args), ctx).fit()
        if ctx.main:
            print(json.dumps(summary))
        return 0
    finally:
        dist_.teardown()


def build_task(args, folder: Path, tokenizer, max_length: int):
    from ..training import finetune as ft
    from ..training.data import read_conll, read_squad, read_table

    if args.task == "classify":
        rows = read_table(args.train, args.format)
        from ..training.data import column

        id2label = ft.label_set(column(rows, args.label_column, args.train, "--label-column"))
        if len(id2label) < 2:
            raise LmatlasError(f"{args.train}: only one label ({id2label[0]!r}); classification needs at least two")
        model = ft.load_for_finetuning(folder, "sequence-classification", id2label)
        label2id = model.config.label2id
        types = ft._uses_token_types(model)
        train = ft.classification_examples(tokenizer, rows, args.train, args.text_column, args.text_pair_column,
                                           args.label_column, label2id, max_length, types)
        dev = None
        if args.dev:
            dev = ft.classification_examples(tokenizer, read_table(args.dev, args.format), args.dev, args.text_column,
                                             args.text_pair_column, args.label_column, label2id, max_length, types)
        return ft.ClassifyTask(model, tokenizer, folder, train, dev, args.seed)
    if args.task == "ner":
        sentences = read_conll(args.train)
        tags = sorted({t for _, ts in sentences for t in ts}, key=lambda t: (t != "O", t[2:], t))
        model = ft.load_for_finetuning(folder, "token-classification", dict(enumerate(tags)))
        label2id = model.config.label2id
        train = ft.ner_examples(tokenizer, sentences, args.train, label2id, max_length)
        dev = ft.ner_examples(tokenizer, read_conll(args.dev), args.dev, label2id, max_length) if args.dev else None
        return ft.NERTask(model, tokenizer, folder, train, dev, args.seed)
    if args.task == "qa":
        model = ft.load_for_finetuning(folder, "question-answering")
        questions = read_squad(args.train)
        unanswerable = sum(1 for q in questions if not q["answers"]["text"])
        if unanswerable and not args.null_answers:
            raise LmatlasError(f"{args.train}: {unanswerable} questions have no answer (SQuAD 2.0); pass --null-answers")
        if args.stride >= max_length // 2:
            raise LmatlasError(f"--stride {args.stride} must be less than half of --max-length {max_length}")
        train = ft.qa_features(tokenizer, questions, max_length, args.stride)
        dev_q = read_squad(args.dev) if args.dev else None
        dev_f = ft.qa_features(tokenizer, dev_q, max_length, args.stride) if dev_q else None
        return ft.QATask(model, tokenizer, folder, train, dev_q, dev_f, args.seed, args.null_answers)
    if args.task == "seq2seq":
        model = ft.load_for_finetuning(folder, "seq2seq-lm")
        read = lambda f: ft.seq2seq_examples(  # noqa: E731
            tokenizer, read_table(f, args.format), f, args.source_column, args.target_column, args.source_prefix,
            max_length, args.max_target_length)
        train = read(args.train)
        dev = read(args.dev) if args.dev else None
        return ft.Seq2SeqTask(model, tokenizer, folder, train, dev, args.seed, args.max_new_tokens, args.num_beams)
    raise AssertionError(args.task)
