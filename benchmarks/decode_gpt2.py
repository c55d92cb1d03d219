"""Greedy decoding speed, lmatlas against transformers, side by side in one run.

GPT-2 124M's shape (GPT2Config() defaults) with random weights, written once by transformers
and read by both; prompts from the real GPT-2 tokenizer on Shakespeare, 32 tokens each;
128 new tokens at batch 1 and 64 at batch 8 (EOS disabled so every run has the same length).
Each measurement is the best of --repeats runs. Reports tokens/s (new tokens of the whole
batch per second), the ratios to transformers fp32, the peak resident memory of each phase,
and, at batch 1, how close a token comes to the time it takes to stream the weights once from
memory (the bandwidth bound), with the bandwidth measured here, now.

    python benchmarks/decode_gpt2.py [--repeats 3] [--threads N] [--only lmatlas]

Ratios are what to read: absolute times on a shared machine are noise.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import hwm_mb, memory_bandwidth_gbs, report_bound, reset_peak, rss_mb

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def prompts(tokenizer, batch: int, length: int = 32) -> torch.Tensor:
    text = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    ids = tokenizer.encode(text[:20000])
    return torch.tensor([ids[i * 97 : i * 97 + length] for i in range(batch)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", choices=["lmatlas", "transformers"], default=None)
    ap.add_argument("--half", default="bfloat16,float16", help="half-precision dtypes to time for lmatlas")
    ap.add_argument("--folder", default=None, help="reuse a checkpoint folder written by an earlier run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    import lmatlas
    from lmatlas.tokenizer import load_tokenizer

    transformers.logging.set_verbosity_error()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="lmatlas-gpt2-bench-"))
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        ref = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
        ref.save_pretrained(folder)
        del ref
        for name in ("vocab.json", "merges.txt"):
            (folder / name).write_bytes((DATA / "gpt2-tokenizer" / name).read_bytes())
    tok = load_tokenizer(folder)
    weight_bytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    cases = [(1, 128), (8, 64)]
    print(f"load average at start: {os.getloadavg()[0]:.1f} (1 min)")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"CPU {os.cpu_count()}; GPT-2 124M shape, weights {weight_bytes / 1e6:.0f} MB fp32")
    bw = memory_bandwidth_gbs()
    print(f"memory read bandwidth now: {bw:.1f} GB/s -> bound at batch 1: "
          f"{bw * 1e9 / weight_bytes:.1f} tok/s fp32, {2 * bw * 1e9 / weight_bytes:.1f} tok/s half")

    results: dict[tuple[str, int], float] = {}
    outputs: dict[tuple[str, int], torch.Tensor] = {}
    memory: dict[str, float] = {}
    runners = {}

    # Load each model and warm it up on both cases in turn, noting the memory it adds; then time
    # them interleaved (one run of each in turn, best of --repeats), so that load from other
    # processes on a shared machine does not favour whichever ran in a quiet moment.
    def add(name: str, load_model, generate) -> None:
        gc.collect()
        reset_peak()
        base = rss_mb()
        model = load_model()
        for batch, new in cases:
            ids = prompts(tok, batch)
            generate(model, ids, torch.ones_like(ids), new)
        memory[name] = hwm_mb() - base
        runners[name] = (model, generate)
        print(f"  loaded and warmed up {name} (+{memory[name]:.0f} MB peak)", flush=True)

    if args.only != "lmatlas":
        def hf(model, ids, mask, new):
            with torch.inference_mode():
                return model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                      do_sample=False, pad_token_id=50256)

        add("transformers fp32",
            lambda: transformers.GPT2LMHeadModel.from_pretrained(folder, torch_dtype=torch.float32).eval(), hf)

        if torch.get_num_threads() > 1:
            # What transformers gets on one thread: lmatlas decodes on fewer threads when other
            # processes hold cores (see lmatlas.runtime.threads.StepThreads), so show that side too.
            def hf_one_thread(model, ids, mask, new):
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    return hf(model, ids, mask, new)
                finally:
                    torch.set_num_threads(threads)

            runners["transformers fp32, 1 thread"] = (runners["transformers fp32"][0], hf_one_thread)

    if args.only != "transformers":
        def ours(model, ids, mask, new):
            return model.generate(ids, mask, max_new_tokens=new, min_new_tokens=new, pad_token_id=50256)

        for dtype in ["float32", *[d for d in args.half.split(",") if d]]:
            add(f"lmatlas {dtype}", lambda dtype=dtype: lmatlas.load(folder, dtype=dtype), ours)

    for batch, new in cases:
        ids = prompts(tok, batch)
        mask = torch.ones_like(ids)
        best = {name: float("inf") for name in runners}
        for _ in range(args.repeats):
            for name, (model, generate) in runners.items():
                gc.collect()
                t = time.perf_counter()
                outputs[(name, batch)] = generate(model, ids, mask, new)
                best[name] = min(best[name], time.perf_counter() - t)
        for name, seconds in best.items():
            results[(name, batch)] = batch * new / seconds
            print(f"  {name:24s} batch {batch}: {batch * new / seconds:7.1f} tok/s  ({seconds * 1e3 / new:6.1f} ms/step)",
                  flush=True)

    print()
    if args.only is None:
        for batch, _ in cases:
            same = torch.equal(outputs[("lmatlas float32", batch)], outputs[("transformers fp32", batch)])
            print(f"batch {batch}: lmatlas fp32 tokens identical to transformers: {same}")
        references = [r for r in ("transformers fp32", "transformers fp32, 1 thread") if (r, 1) in results]
        for name in sorted({n for n, _ in results if n.startswith("lmatlas")}):
            for ref_name in references:
                ratios = ", ".join(
                    f"batch {b}: {results[(name, b)] / results[(ref_name, b)]:.2f}x" for b, _ in cases
                )
                print(f"{name:24s} vs {ref_name + ':':29s} {ratios}")
    print("peak RSS added by each model, loaded and run (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    for name in sorted({n for n, _ in results}):
        half = "16" in name and "fp32" not in name and "float32" not in name
        report_bound(name, results[(name, 1)], weight_bytes / (2 if half else 1), bw)
    print(f"load average at end: {os.getloadavg()[0]:.1f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
