"""`lmatlas train OBJECTIVE --model PRESET|PATH --data FILES --out DIR`: pretrain with a paper's objective.

The same command runs on one process or, under ``torchrun --nproc_per_node N``, as distributed
data parallel training (see ``lmatlas.training.distributed``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import LmatlasError

# Objective names, and the papers' names for them.
OBJECTIVES = {
    "causal-lm": "causal-lm", "gpt": "causal-lm", "clm": "causal-lm",
    "masked-lm": "masked-lm", "mlm": "masked-lm", "bert": "masked-lm", "roberta": "masked-lm",
    "replaced-token-detection": "replaced-token-detection", "electra": "replaced-token-detection",
    "rtd": "replaced-token-detection",
    "distillation": "distillation", "distilbert": "distillation",
    "instruction": "instruction", "alpaca": "instruction",
    "span-corruption": "span-corruption", "t5": "span-corruption",
    "denoising": "denoising", "bart": "denoising",
}  # fmt: skip


def add_trainer_options(p, steps: int = 1000, lr: float = 3e-4, batch: int = 8) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=steps,
                   help=f"optimizer steps (default {steps})" if steps else "optimizer steps (default: from --epochs)")
    g.add_argument("--batch-size", type=int, default=batch, help=f"sequences per process and step (default {batch})")
    g.add_argument("--grad-accum", type=int, default=1, help="accumulate gradients over this many batches")
    g.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    g.add_argument("--min-lr", type=float, default=None, help="final learning rate (default lr/10 cosine, 0 linear)")
    g.add_argument("--warmup", type=int, default=0, help="linear warmup steps")
    g.add_argument("--schedule", default="cosine", choices=["cosine", "linear", "constant"])
    g.add_argument("--decay-steps", type=int, default=None, help="steps to reach --min-lr (default --steps)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decay of matrices (not biases, norms)")
    g.add_argument("--beta2", type=float, default=0.999)
    g.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping (0: none)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    g.add_argument("--seed", type=int, default=1337)
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    g.add_argument("--fsdp", action="store_true", help="under torchrun: shard the model (FSDP) instead of replicating it")
    g = p.add_argument_group("evaluation and checkpoints")
    g.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (default: at the end)")
    g.add_argument("--patience", type=int, default=None, help="stop after N evaluations without improvement")
    g.add_argument("--metric", default=None, help="the dev metric for the best model and early stopping")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: at the end)")
    g.add_argument("--keep", type=int, default=2, help="checkpoints kept (default 2)")
    g.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                   help="continue from the latest checkpoint in --out (or the one given)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress output")
    g.add_argument("--log-every", type=int, default=50, help="progress lines when not on a terminal")


def trainer_config(args, **extra):
    from ..training.trainer import TrainConfig

    return TrainConfig(
        out=args.out, steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        min_lr=args.min_lr, warmup=args.warmup, schedule=args.schedule, decay_steps=args.decay_steps,
        weight_decay=args.weight_decay, beta2=args.beta2, clip=args.clip or None, bf16=args.bf16,
        eval_every=args.eval_every, patience=args.patience, metric=args.metric, save_every=args.save_every,
        keep=args.keep, seed=args.seed, device=args.device, fsdp=args.fsdp, resume=args.resume or False,
        progress=args.progress, log_every=args.log_every, **extra,
    )


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain a model with a paper's objective (GPT, BERT, ELECTRA, DistilBERT, Alpaca...)",
        description="Train with the objective of a landmark paper: causal-lm (GPT), masked-lm (BERT, RoBERTa), "
        "replaced-token-detection (ELECTRA), distillation (DistilBERT), instruction (Alpaca), span-corruption (T5), "
        "denoising (BART). --model is an "
        "architecture preset built from scratch at the size --layers/--heads/--dim give, or a checkpoint folder "
        "to continue. Under torchrun the same command trains data-parallel.",
    )
    p.add_argument("objective", metavar="OBJECTIVE", help=", ".join(sorted(set(OBJECTIVES.values()))) + " (or gpt, bert, electra, distilbert, alpaca, t5, bart)")
    p.add_argument("--model", "-m", required=True, help="architecture preset (gpt2, bert-base, llama-7b...) or checkpoint folder; for distillation, the teacher")
    p.add_argument("--data", nargs="+", required=True, help="training text files (JSON Lines for instruction)")
    p.add_argument("--out", required=True, help="output folder: model/, checkpoint-N/, log.jsonl, loss.png")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder, or a kind to train on --data: char, bpe, byte-bpe, wordpiece, unigram")
    p.add_argument("--vocab-size", type=int, default=None, help="for a tokenizer trained here")
    g = p.add_argument_group("model size (architecture presets)")
    g.add_argument("--layers", type=int, default=None)
    g.add_argument("--heads", type=int, default=None)
    g.add_argument("--kv-heads", type=int, default=None)
    g.add_argument("--dim", type=int, default=None, help="hidden size")
    g.add_argument("--ffn", type=int, default=None, help="MLP width (default: scaled with --dim)")
    g.add_argument("--dropout", type=float, default=None)
    g.add_argument("--block", type=int, default=128, help="tokens per sequence (default 128)")
    g = p.add_argument_group("data")
    g.add_argument("--val", nargs="+", default=None, help="validation files (default: the last --val-fraction of --data)")
    g.add_argument("--val-fraction", type=float, default=0.1)
    g.add_argument("--eval-windows", type=int, default=None, help="at most this many validation sequences")
    g = p.add_argument_group("objectives")
    g.add_argument("--mask-prob", type=float, default=0.15, help="masked-lm, electra, distillation: tokens chosen")
    g.add_argument("--whole-word", action="store_true", help="mask whole words")
    g.add_argument("--generator-fraction", type=float, default=0.25, help="electra: generator width / discriminator's")
    g.add_argument("--temperature", type=float, default=2.0, help="distillation: softmax temperature")
    g.add_argument("--student-layers", default=None, help="distillation: teacher layers the student starts from (default every other)")
    add_trainer_options(p)
    p.set_defaults(func=run)


def _resolve_tokenizer(args, ctx, out: Path):
    from ..training import distributed as dist_
    from ..training.tokenizer_trainer import KINDS, train_tokenizer

    if args.tokenizer in KINDS and not Path(args.tokenizer).is_dir():
        folder = out / "tokenizer"
        if not (args.resume and (folder / "tokenizer.json").is_file()):
            if ctx.main:
                files = args.data
                if OBJECTIVES[args.objective] == "instruction":
                    raise LmatlasError("train a tokenizer with `lmatlas tokenizer train` for instruction data")
                specials = None
                objective = OBJECTIVES[args.objective]
                if objective == "span-corruption":  # T5's: padding, end, unknown, then 100 sentinels
                    specials = ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(100)]
                elif objective == "denoising":  # BART's
                    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
                elif args.tokenizer == "char" and objective != "causal-lm":
                    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # what masking needs
                train_tokenizer(files, args.tokenizer, folder, vocab_size=args.vocab_size, specials=specials)
            dist_.barrier(ctx)
        return folder
    if args.tokenizer:
        return Path(args.tokenizer)
    if Path(args.model).expanduser().is_dir():
        return Path(args.model)
    raise LmatlasError(f"--tokenizer is needed to train {args.model} from scratch: a tokenizer folder, or "
                       f"one of {', '.join(KINDS)} to train one on --data")


def run(args) -> int:
    from ..checkpoint import resolve
    from ..tokenizer import load_tokenizer
    from ..training import distributed as dist_
    from ..training.trainer import Trainer

    objective = OBJECTIVES.get(args.objective)
    if objective is None:
        raise LmatlasError(f"unknown objective {args.objective!r}; choose one of {', '.join(sorted(set(OBJECTIVES.values())))}")
    if args.block < 2:
        raise LmatlasError(f"--block must be at least 2, not {args.block}")
    cfg = trainer_config(args)  # checks the options before any work
    ctx = dist_.setup(args.device)
    try:
        import torch

        out = Path(args.out)
        if ctx.main:
            out.mkdir(parents=True, exist_ok=True)
        dist_.barrier(ctx)
        tok_dir = _resolve_tokenizer(args, ctx, out)
        if Path(tok_dir).is_dir():
            tok_dir = Path(tok_dir)
        else:
            tok_dir = resolve(tok_dir, weights=False)
        tokenizer = load_tokenizer(tok_dir)
        torch.manual_seed(args.seed)
        task = build_task(objective, args, tokenizer, tok_dir)
        if ctx.rank:
            torch.manual_seed(args.seed + ctx.rank)  # dropout differs across replicas
        summary = Trainer(task, cfg, ctx).fit()
        if ctx.main:
            print(json.dumps(summary))
        return 0
    finally:
        dist_.teardown()


def _overrides(args) -> dict:
    return {"num_layers": args.layers, "num_heads": args.heads, "num_kv_heads": args.kv_heads,
            "hidden_size": args.dim, "intermediate_size": args.ffn, "dropout": args.dropout}


def _streams(args, tokenizer, length: int, vocab_size: int):
    from ..training.data import load_stream
    from ..training.tasks import check_stream

    sep = tokenizer.eos_token_id
    stream = load_stream(tokenizer, args.data, separator_id=sep)
    if args.val:
        train, val = stream, load_stream(tokenizer, args.val, separator_id=sep)
    elif args.val_fraction > 0:
        if not 0 < args.val_fraction < 1:
            raise LmatlasError(f"--val-fraction must be between 0 and 1, not {args.val_fraction}")
        train, val = stream.split(args.val_fraction)
    else:
        train, val = stream, None
    check_stream(train, length, "training data", args.data, vocab_size)
    if val is not None:
        check_stream(val, length, "validation data", args.val or args.data, vocab_size)
    return train, val


def build_task(objective: str, args, tokenizer, tok_dir):
    from ..training import tasks

    block = args.block
    if objective == "causal-lm":
        model = tasks.build_model(args.model, "causal-lm", tokenizer, block, _overrides(args), causal=True)
        train, val = _streams(args, tokenizer, block + 1, model.config.vocab_size)
        return tasks.CausalLMTask(model, tok_dir, train, val, block, args.seed, args.eval_windows)
    if objective == "masked-lm":
        model = tasks.build_model(args.model, "masked-lm", tokenizer, block, _overrides(args), causal=False)
        train, val = _streams(args, tokenizer, block, model.config.vocab_size)
        return tasks.MaskedLMTask(model, tokenizer, tok_dir, train, val, block, args.seed, args.mask_prob,
                                  args.whole_word, args.eval_windows)
    if objective == "replaced-token-detection":
        from ..model import LmatlasModel

        disc = tasks.build_model(args.model, "replaced-token-detection", tokenizer, block, _overrides(args), causal=False)
        if not 0 < args.generator_fraction <= 1:
            raise LmatlasError(f"--generator-fraction must be in (0, 1], not {args.generator_fraction}")
        gen = LmatlasModel(tasks.electra_generator_config(disc.config, args.generator_fraction), "masked-lm").train()
        from ..save import hf_config

        hf_config(disc.config, "replaced-token-detection")
        train, val = _streams(args, tokenizer, block, disc.config.vocab_size)
        return tasks.ElectraTask(disc, gen, tokenizer, tok_dir, train, val, block, args.seed, args.mask_prob,
                                 args.whole_word, args.eval_windows)
    if objective == "distillation":
        from ..training.objectives import student_from_teacher

        if any(v is not None for v in _overrides(args).values()):
            raise LmatlasError("distillation builds the student from the teacher's layers; use --student-layers, not size options")
        teacher = tasks.build_model(args.model, "masked-lm", tokenizer, block, None, causal=False)
        layers = None
        if args.student_layers:
            try:
                layers = [int(x) for x in args.student_layers.split(",")]
            except ValueError:
                raise LmatlasError(f"--student-layers must be numbers separated by commas, not {args.student_layers!r}") from None
            bad = [i for i in layers if not 0 <= i < teacher.config.num_layers]
            if bad:
                raise LmatlasError(f"--student-layers: the teacher has layers 0 to {teacher.config.num_layers - 1}, not {bad[0]}")
        try:
            student = student_from_teacher(teacher, layers).train()
        except ValueError as e:
            raise LmatlasError(str(e)) from None
        train, val = _streams(args, tokenizer, block, teacher.config.vocab_size)
        return tasks.DistillationTask(student, teacher, tokenizer, tok_dir, train, val, block, args.seed,
                                      args.temperature, args.mask_prob, args.whole_word, args.eval_windows)
    if objective == "instruction":
        from ..training.data import read_table

        model = tasks.build_model(args.model, "causal-lm", tokenizer, block, _overrides(args), causal=True)
        rows = [r for f in args.data for r in read_table(f, "jsonl")]
        examples = tasks.instruction_examples(tokenizer, rows, block, ", ".join(args.data))
        if args.val:
            dev_rows = [r for f in args.val for r in read_table(f, "jsonl")]
            dev = tasks.instruction_examples(tokenizer, dev_rows, block, ", ".join(args.val))
        elif args.val_fraction > 0 and len(examples) >= 10:
            cut = int(len(examples) * (1 - args.val_fraction))
            examples, dev = examples[:cut], examples[cut:]
        else:
            dev = []
        return tasks.InstructionTask(model, tokenizer, tok_dir, examples, dev, args.seed)
    if objective in ("span-corruption", "denoising"):
        model = tasks.build_model(args.model, "seq2seq-lm", tokenizer, block, _overrides(args))
        train, val = _streams(args, tokenizer, block, model.config.vocab_size)
        return tasks.DenoisingTask(objective, model, tokenizer, tok_dir, train, val, block, args.seed,
                                   args.eval_windows)
    raise AssertionError(objective)
