"""Training speed of nanoGPT's baby GPT: the lmatlas trainer against transformers' GPT-2.

The same model (4 layers, 4 heads, 128 dimensions, block 64, characters of Shakespeare, batch
12) with the same weights, trained by ``lmatlas.training.Trainer`` (with its logging, loss
bookkeeping and schedule) and by a plain AdamW loop over transformers' ``GPT2LMHeadModel``.
Runs alternate; prints the median milliseconds per step of each and the ratio.

    python benchmarks/train_step.py [--steps 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "tinyshakespeare" / "input.txt"
SIZE = dict(num_layers=4, num_heads=4, hidden_size=128, dropout=0.0)
BLOCK, BATCH = 64, 12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import transformers

    from lmatlas.save import save_model
    from lmatlas.tokenizer import load_tokenizer
    from lmatlas.training.data import load_stream, windows
    from lmatlas.training.objectives import causal_lm
    from lmatlas.training.models import build_model
    from lmatlas.training.tasks import CausalLMTask
    from lmatlas.training.tokenizer_trainer import train_tokenizer
    from lmatlas.training.trainer import TrainConfig, Trainer, param_groups

    work = Path(tempfile.mkdtemp())
    tok_dir = train_tokenizer([DATA], "char", work / "tok")
    tok = load_tokenizer(tok_dir)
    stream = load_stream(tok, [DATA])
    torch.manual_seed(0)
    model = build_model("gpt2", "causal-lm", tok, BLOCK, SIZE)
    save_model(model, work / "init", tok_dir)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps of {BATCH}x{BLOCK} tokens")

    def ours() -> float:
        model.load_state_dict(init)
        task = CausalLMTask(model, tok_dir, stream, None, BLOCK, seed=1)
        cfg = TrainConfig(out=Path(tempfile.mkdtemp(dir=work)), steps=args.steps, batch_size=BATCH, lr=1e-3, weight_decay=0.1,
                          beta2=0.99, progress=False, plot=False)
        trainer = Trainer(task, cfg)
        trainer.fit()
        return statistics.median(r["ms_per_step"] for r in trainer.history if r["split"] == "train")

    def reference() -> float:
        ref = transformers.GPT2LMHeadModel.from_pretrained(work / "init").train()
        opt = torch.optim.AdamW(param_groups(ref, 0.1), lr=1e-3, betas=(0.9, 0.99))
        gen = torch.Generator().manual_seed(1)
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            ids, _ = windows(stream, torch.randint(len(stream) - BLOCK, (BATCH,), generator=gen), BLOCK + 1)
            batch = causal_lm(ids)
            logits = ref(batch["input_ids"]).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(1000 * (time.perf_counter() - t))
        return statistics.median(times)

    a, b = [], []
    for _ in range(args.repeats):
        a.append(ours())
        b.append(reference())
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"lmatlas trainer      {ma:7.1f} ms/step")
    print(f"transformers GPT-2   {mb:7.1f} ms/step")
    print(f"ratio (reference / lmatlas): {mb / ma:.2f}x")


if __name__ == "__main__":
    main()
