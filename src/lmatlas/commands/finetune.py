"""`lmatlas finetune classify|ner|qa|seq2seq --model PATH --train FILE --dev FILE --out DIR`."""

from __future__ import annotations

from .train import add_trainer_options, train_with_flags

TASKS = ("classify", "ner", "qa", "seq2seq")


HELP = "fine-tune a pretrained model: classify (sentences, pairs), ner (CoNLL), qa (SQuAD), seq2seq"
DESCRIPTION = (
    "Fine-tune a pretrained encoder with a task head and report the usual metric: accuracy and "
    "F1 (classify, which also takes a decoder such as GPT-2 or Llama, read at each text's last token), entity "
    "F1 (ner), exact match and F1 (qa), ROUGE-L (seq2seq, an encoder-decoder such as T5 or BART). The best "
    "model on --dev is kept in OUT/model."
)


def arguments(p) -> None:
    """The arguments of `lmatlas finetune`, on its parser (made by ``lmatlas.cli``)."""
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
    from ..training import FINETUNE_RECIPES

    fields = dict(
        train=args.train, model=args.model, dev=args.dev, epochs=None if args.steps else args.epochs,
        max_length=args.max_length, format=args.format, text_column=args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.label_column, source_column=args.source_column,
        target_column=args.target_column, source_prefix=args.source_prefix,
        max_target_length=args.max_target_length, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
        stride=args.stride, null_answers=args.null_answers,
    )
    return train_with_flags(FINETUNE_RECIPES[args.task], fields, args)
