"""Transformer-XL's two claims on Shakespeare's characters, with a small model:

1. Memory helps: the same model (a reduced ``transfo-xl-wt103``) trained for the same steps on
   segments of the same length, once carrying a memory of the last segment (``mem_len`` =
   segment length) and once without (``mem_len`` 0, each segment on its own); the validation
   loss of each, read as it was trained (also the memory model's with a 4x longer memory, as
   the paper evaluates). Not a timing.
2. Memory is fast: evaluating token by token with a context of L tokens, reusing the memory (each
   step reads one token; its keys and values come from L cached states per layer) against
   recomputing the whole window of the last L tokens each step, as a model without memory must;
   tokens per second of each, their ratio, and the loss each reaches over the same tokens.

    python benchmarks/transfo_xl_memory.py [--steps 1000] [--block 16] [--contexts 64,128,256,512,1024]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import lmatlas
from lmatlas.training import SegmentLMRecipe, TrainConfig, train
from lmatlas.training.data import load_stream
from lmatlas.training.distributed import Context
from lmatlas.training.tasks import SegmentLMTask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import alternated_best  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "tinyshakespeare" / "input.txt"


def train_both(args, root: Path) -> tuple[dict, Path, Path]:
    """Train the two models; their validation curves, the memory model's folder, the val file."""
    text = DATA.read_text(encoding="utf-8")[: args.chars or None]
    cut = int(len(text) * 0.9)
    train_file, val_file = root / "train.txt", root / "val.txt"
    train_file.write_text(text[:cut], encoding="utf-8")
    val_file.write_text(text[cut:], encoding="utf-8")
    curves, tokenizer = {}, "char"
    for name, memory in (("with memory", args.block), ("without memory", 0)):
        recipe = SegmentLMRecipe(model="transfo-xl-wt103", data=[str(train_file)], val=[str(val_file)],
                                 tokenizer=tokenizer, block=args.block, memory=memory, num_layers=args.layers,
                                 num_heads=args.heads, hidden_size=args.dim, dropout=0.1)
        out = root / name.replace(" ", "-")
        t = time.perf_counter()
        train(recipe, TrainConfig(out=out, steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.steps // 20,
                                  eval_every=args.steps // 4, progress=False, device="cpu", seed=0, plot=False))
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        curves[name] = ([(r["step"], r["loss"]) for r in records if r["split"] == "dev"], time.perf_counter() - t)
        if tokenizer == "char":
            tokenizer = str(out / "tokenizer")  # both models read the same characters
    return curves, root / "with-memory", val_file


def val_loss(model, val, block: int, memory: int) -> float:
    """The validation loss read segment by segment with a memory of ``memory`` tokens."""
    model.config.memory_length = memory
    with torch.no_grad():
        return SegmentLMTask(model, None, val, val, block).evaluate(model, Context())["loss"]


def token_by_token(model, ids: torch.Tensor, context: int, n: int, memory: bool) -> float:
    """Predict ids[context + i] for i < n from the ``context`` tokens before it: reusing the
    memory (one token a step, after a memory of the context - 1 before it) or recomputing the
    window (``context`` tokens a step). The summed loss."""
    start, total = context, 0.0
    with torch.inference_mode():
        if memory:
            model.config.memory_length = context - 1
            mems = model(ids[None, : start - 1]).mems  # fills the memory: no zeros left in it
            for i in range(n):
                out = model(ids[None, start + i - 1: start + i], mems=mems)
                mems = out.mems
                total -= float(out.logits[0, -1, ids[start + i]])
        else:
            model.config.memory_length = 0
            for i in range(n):
                out = model(ids[None, start + i - context: start + i], logits_to_keep=1)
                total -= float(out.logits[0, -1, ids[start + i]])
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--block", type=int, default=16, help="segment length, the same for both models")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--chars", type=int, default=0, help="characters of Shakespeare to use (0: all 1.1M)")
    p.add_argument("--contexts", default="64,128,256,512,1024", help="context lengths of the speed test")
    p.add_argument("--tokens", type=int, default=128, help="tokens predicted one by one per context")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        curves, folder, val_file = train_both(args, Path(tmp))
        model = lmatlas.load(folder / "model")
        val = load_stream(lmatlas.load_tokenizer(folder / "tokenizer"), [val_file])
        print(f"\n1. validation loss (nats per character) after {args.steps} steps of {args.batch} segments of "
              f"{args.block}, {model.num_parameters():,} parameters")
        for name, (curve, seconds) in curves.items():
            print(f"{name:>16}: " + ", ".join(f"step {s} {v:.3f}" for s, v in curve) + f"  ({seconds:.0f} s)")
        print(f"{'memory x4':>16}: {val_loss(model, val, args.block, 4 * args.block):.3f} (the memory model, "
              f"mem_len {4 * args.block} at evaluation)")

        print(f"\n2. token by token over {args.tokens} validation tokens: memory reused vs window recomputed")
        ids = val.ids
        for context in (int(c) for c in args.contexts.split(",") if c):
            sides = {"memory": lambda c=context: token_by_token(model, ids, c, args.tokens, True),
                     "recompute": lambda c=context: token_by_token(model, ids, c, args.tokens, False)}
            best = alternated_best(sides, repeats=2)
            (tm, lm), (tr, lr) = best["memory"], best["recompute"]
            print(f"context {context:4d}: memory {args.tokens / tm:7.0f} tokens/s, recompute {args.tokens / tr:6.0f} "
                  f"tokens/s, speed-up {tr / tm:5.1f}x; loss {lm / args.tokens:.3f} vs {lr / args.tokens:.3f}")


if __name__ == "__main__":
    main()
