"""`lmatlas train OBJECTIVE --model PRESET|PATH --data FILES --out DIR`: pretrain with a paper's objective.

The same command runs on one process or, under ``torchrun --nproc_per_node N``, as distributed
data parallel training (see ``lmatlas.training.distributed``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Any

from ..errors import LmatlasError
from ._flags import in_flags
from ._io import check_output_folder, readable_again
from . import train_preferences

if TYPE_CHECKING:
    from ..training import TrainConfig

# Objective names, and the papers' names for them.
OBJECTIVES = {
    "causal-lm": "causal-lm", "gpt": "causal-lm", "clm": "causal-lm",
    "segment-lm": "segment-lm", "transformer-xl": "segment-lm", "transfo-xl": "segment-lm", "txl": "segment-lm",
    "masked-lm": "masked-lm", "mlm": "masked-lm", "bert": "masked-lm", "roberta": "masked-lm", "ernie": "masked-lm",
    "replaced-token-detection": "replaced-token-detection", "electra": "replaced-token-detection",
    "rtd": "replaced-token-detection",
    "distillation": "distillation", "distilbert": "distillation",
    "instruction": "instruction", "alpaca": "instruction",
    "span-corruption": "span-corruption", "t5": "span-corruption",
    "denoising": "denoising", "bart": "denoising",
    "permutation-lm": "permutation-lm", "xlnet": "permutation-lm", "plm": "permutation-lm",
    "decision-transformer": "decision-transformer",
    "clip": "clip", "contrastive": "clip",
    "reward": "reward", "dpo": "dpo", "grpo": "grpo", "rloo": "rloo", "ppo": "ppo",
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


def trainer_config(args) -> "TrainConfig":
    from ..training import TrainConfig

    return TrainConfig(
        out=args.out, steps=args.steps or None, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        min_lr=args.min_lr, warmup=args.warmup, schedule=args.schedule, decay_steps=args.decay_steps,
        weight_decay=args.weight_decay, beta2=args.beta2, clip=args.clip or None, bf16=args.bf16,
        eval_every=args.eval_every, patience=args.patience, metric=args.metric, save_every=args.save_every,
        keep=args.keep, seed=args.seed, device=args.device, fsdp=args.fsdp, resume=args.resume or False,
        progress=args.progress, log_every=args.log_every,
    )


# The flags whose names differ from the fields they set (the others are "--" + the field's
# name with dashes).
FLAGS = {"num_layers": "--layers", "num_heads": "--heads", "num_kv_heads": "--kv-heads", "hidden_size": "--dim",
         "intermediate_size": "--ffn", "mask_probability": "--mask-prob", "progress": "--no-progress",
         "clip": "--clip-range"}
# A hint the library gives Python users that has no flag here (the head size follows --dim / --heads).
_NO_FLAG = {"; give head_dim too": ""}


def flag(field: str) -> str:
    """The command-line flag that sets a recipe's or TrainConfig's field."""
    return FLAGS.get(field) or "--" + field.replace("_", "-")


def train_with_flags(recipe: type, fields: dict[str, Any], args) -> int:
    """Train the recipe of class ``recipe`` with those of ``fields`` it has (the flags of other
    objectives keep their defaults) and the trainer options of ``args``; print the summary.
    Errors about fields name the flags that set them."""
    from ..training import distributed as dist_
    from ..training import train
    from ..training.fields import FieldError

    check_output_folder(args.out, "--out")
    names = {f.name for f in dataclasses.fields(recipe)}
    try:
        with contextlib.ExitStack() as stack:
            for name in ("data", "val", "train", "dev"):  # pipes among the files, read once
                if name in fields and fields[name] is not None:
                    one = isinstance(fields[name], str)
                    paths = stack.enter_context(readable_again([fields[name]] if one else list(fields[name])))
                    fields[name] = paths[0] if one else paths
            summary = train(recipe(**{k: v for k, v in fields.items() if k in names}), trainer_config(args))
    except FieldError as e:
        raise LmatlasError(e.naming(flag)) from None
    except KeyboardInterrupt:
        if dist_.main_process():
            print("lmatlas: interrupted; " + _kept(args), file=sys.stderr)
        raise
    except LmatlasError as e:  # from deeper down, in the fields' names: the flags that set them
        raise LmatlasError(in_flags(str(e), {**{name: flag(name) for name in names}, **_NO_FLAG})) from None
    if dist_.main_process():
        print(json.dumps(summary))
    return 0


def _kept(args) -> str:
    """What an interrupted run leaves, and how to lose less next time."""
    from pathlib import Path

    from ..training.checkpoints import checkpoints

    found = checkpoints(Path(args.out))
    if found:
        last = found[-1]
        return f"continue from {last} with --resume"
    hint = "" if args.save_every else " (--save-every N writes one every N steps, which --resume continues from)"
    return f"no checkpoint was written{hint}"


HELP = "pretrain a model with a paper's objective (GPT, BERT, ELECTRA, DistilBERT, Alpaca, XLNet...)"
DESCRIPTION = (
    "Train with the objective of a landmark paper: causal-lm (GPT), segment-lm (Transformer-XL: consecutive "
    "segments with a memory), masked-lm (BERT, RoBERTa), "
    "replaced-token-detection (ELECTRA), distillation (DistilBERT), instruction (Alpaca), span-corruption (T5), "
    "denoising (BART), permutation-lm (XLNet); decision-transformer (the Decision Transformer, on offline trajectories); clip (CLIP's "
    "contrastive objective, continuing a CLIP folder on JSON Lines of image paths and captions); and from "
    "preferences: reward (a reward model), dpo, grpo, rloo, ppo. --model is an "
    "architecture preset built from scratch at the size --layers/--heads/--dim give, or a checkpoint folder "
    "to continue. Under torchrun the same command trains data-parallel."
)


def arguments(p) -> None:
    """The arguments of `lmatlas train`, on its parser (made by ``lmatlas.cli``)."""
    p.add_argument("objective", metavar="OBJECTIVE", help=", ".join(sorted(set(OBJECTIVES.values()))) + " (or gpt, transformer-xl, bert, ernie, electra, distilbert, alpaca, t5, bart, xlnet)")
    p.add_argument("--model", "-m", default=None, help="architecture preset (gpt2, bert-base, llama-7b...) or checkpoint folder; for distillation, the teacher (not for decision-transformer, built from the trajectories)")
    p.add_argument("--data", nargs="+", required=True, help="training text files (JSON Lines for instruction; of trajectories for decision-transformer; of {\"image\", \"text\"} for clip)")
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
    g.add_argument("--memory", type=int, default=None,
                   help="segment-lm (Transformer-XL): tokens of memory carried between segments (default --block; 0: none)")
    g.add_argument("--mask-prob", type=float, default=0.15, help="masked-lm, electra, distillation: tokens chosen")
    g.add_argument("--whole-word", action="store_true", help="mask whole words")
    g.add_argument("--phrases", metavar="FILE",
                   help="ERNIE's knowledge masking: a file of phrases and entities (one a line), each masked whole")
    g.add_argument("--generator-fraction", type=float, default=0.25, help="electra: generator width / discriminator's")
    g.add_argument("--temperature", type=float, default=2.0, help="distillation: softmax temperature")
    g.add_argument("--student-layers", default=None, help="distillation: teacher layers the student starts from (default every other)")
    g.add_argument("--partial-k", type=int, default=6,
                   help="permutation-lm: predict the last 1/K of each factorisation order (the paper's K, default 6)")
    g = p.add_argument_group("decision-transformer (trajectories: JSON Lines of states, actions, rewards)")
    g.add_argument("--context", type=int, default=10, help="steps per window (default 10)")
    g.add_argument("--return-scale", type=float, default=1.0, help="returns-to-go are divided by this")
    g.add_argument("--behaviour-cloning", action="store_true", help="the baseline: the same model with every return-to-go zero")
    g.add_argument("--env", default=None, help="evaluate by playing this environment (gridworld) at each evaluation")
    g.add_argument("--targets", default="", help="the target returns to play for, comma-separated (with --env)")
    train_preferences.arguments(p)
    add_trainer_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training import PREFERENCE_RECIPES, RECIPES

    objective = OBJECTIVES.get(args.objective)
    if objective is None:
        raise LmatlasError(f"unknown objective {args.objective!r}; choose one of {', '.join(sorted(set(OBJECTIVES.values())))}")
    if objective == "decision-transformer":
        return _decision_transformer(args)
    if objective in PREFERENCE_RECIPES:
        return train_with_flags(PREFERENCE_RECIPES[objective], train_preferences.fields(args), args)
    if args.model is None:
        raise LmatlasError(f"{args.objective} needs --model: an architecture preset or a checkpoint folder")
    if objective == "clip":
        from ..training.contrastive import ContrastiveRecipe

        fields = dict(model=args.model, data=args.data, val_fraction=args.val_fraction)
        return train_with_flags(ContrastiveRecipe, fields, args)
    fields = dict(
        model=args.model, data=args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size, block=args.block,
        val=args.val, val_fraction=args.val_fraction, eval_windows=args.eval_windows, num_layers=args.layers,
        num_heads=args.heads, num_kv_heads=args.kv_heads, hidden_size=args.dim, intermediate_size=args.ffn,
        dropout=args.dropout, memory=args.memory, mask_probability=args.mask_prob, whole_word=args.whole_word,
        phrases=args.phrases,
        generator_fraction=args.generator_fraction, temperature=args.temperature,
        student_layers=_layers(args.student_layers), partial_k=args.partial_k,
    )
    return train_with_flags(RECIPES[objective], fields, args)


def _decision_transformer(args) -> int:
    from ..training.trajectory import DecisionTransformerRecipe

    if args.model is not None:
        raise LmatlasError("decision-transformer builds its model from the trajectories; give its size with --dim, "
                           "--layers and --heads, not --model")
    try:
        targets = [float(t) for t in args.targets.split(",") if t.strip()]
    except ValueError:
        raise LmatlasError(f"--targets must be numbers separated by commas, not {args.targets!r}") from None
    fields = dict(
        data=args.data, context=args.context, return_scale=args.return_scale, behaviour_cloning=args.behaviour_cloning,
        env=args.env, targets=targets, val_fraction=args.val_fraction, hidden_size=args.dim, num_layers=args.layers,
        num_heads=args.heads, dropout=args.dropout,
    )  # fmt: skip
    return train_with_flags(DecisionTransformerRecipe, {k: v for k, v in fields.items() if v is not None}, args)


def _layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise LmatlasError(f"--student-layers must be numbers separated by commas, not {text!r}") from None
