"""What quantization costs in quality: SmolLM2-135M-Instruct in float32 against its quantized
versions, as lmatlas runs them.

The float32 baseline is the packaged Q4_1 file dequantized (``lmatlas.load(file,
dequantize=True)``); from it lmatlas quantizes Q8_0, Q4_0 and Q4_1 (``quantize=``), beside the
file's own blocks (Q4_1, the head Q8_0). Measured, for each:

- perplexity on English text (tests/data: tinyshakespeare, and the SST-2 dev sentences), in
  windows of --window tokens, two ways: "weights", PyTorch's path on the dequantized blocks (the
  weights' rounding alone), and "runtime", the C kernels, the activations quantized to int8
  blocks as llama.cpp does (each window fed in chunks of at most 256 tokens through the KV cache,
  the rows the kernels take at once);
- greedy agreement with float32: --new tokens after each of 10 chat prompts (decoded as one
  left-padded batch, through the runtime): the tokens before the first difference, and the
  positions that agree.

    python benchmarks/quant_quality.py [--windows 8] [--window 256] [--new 128] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three uses of a paperclip.",
    "How do I boil an egg so that the yolk stays soft?",
    "Translate 'good morning' into Spanish.",
    "What is a prime number? Give an example larger than one hundred.",
    "Name a planet and say one thing about it.",
    "Who wrote Romeo and Juliet, and when?",
    "Give me three tips for learning a new language.",
]


def texts() -> dict[str, str]:
    shakespeare = (DATA / "tinyshakespeare" / "input.txt").read_text()
    lines = (DATA / "sst2" / "dev.tsv").read_text().splitlines()[1:]
    sst2 = " ".join(line.split("\t")[0] for line in lines)
    return {"tinyshakespeare": shakespeare, "sst2": sst2}


def windows(tokenizer, text: str, count: int, size: int) -> list[torch.Tensor]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return [torch.tensor(ids[i * size:(i + 1) * size]) for i in range(count) if (i + 1) * size <= len(ids)]


def perplexity(model, parts: list[torch.Tensor], chunked: bool) -> float:
    """exp of the mean next-token loss over the windows; ``chunked``: each window in chunks of
    as many tokens as the kernels take through the KV cache (the runtime installed)."""
    from lmatlas import runtime
    from lmatlas.runtime.quantized import MAX_KERNEL_ROWS as CHUNK  # the rows the kernels take at once

    if chunked:
        # Every chunk through the integer kernels, whichever path this CPU finds faster for it.
        os.environ["LMATLAS_KERNEL_CHOICE"] = "quant-rows=kernel"

    total, count = 0.0, 0
    with torch.inference_mode():
        for ids in parts:
            if chunked:
                runtime.install(model)
                cache = model.new_cache(1, len(ids))
                logits = torch.cat([model(ids[None, i:i + CHUNK], cache=cache).logits
                                    for i in range(0, len(ids), CHUNK)], dim=1)
            else:
                runtime.uninstall(model)
                logits = model(ids[None]).logits
            loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[1:], reduction="sum")
            total, count = total + loss.item(), count + len(ids) - 1
    return float(torch.exp(torch.tensor(total / count)))


def greedy(model, tokenizer, new: int) -> list[list[int]]:
    """--new tokens after each chat prompt, all prompts decoded at once (left-padded)."""
    from decode_quantized import chat_batch

    ids, mask, pad = chat_batch(tokenizer, PROMPTS)
    out = model.generate(ids, mask, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=pad)
    return out[:, ids.shape[1]:].tolist()


def agreement(a: list[list[int]], b: list[list[int]]) -> tuple[float, float]:
    """(mean tokens before the first difference, fraction of positions that agree)."""
    prefix = [next((i for i, (x, y) in enumerate(zip(r, s)) if x != y), len(r)) for r, s in zip(a, b)]
    same = sum(x == y for r, s in zip(a, b) for x, y in zip(r, s))
    return sum(prefix) / len(prefix), same / sum(len(r) for r in a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=8, help="windows of text per corpus")
    ap.add_argument("--window", type=int, default=256, help="tokens per window")
    ap.add_argument("--new", type=int, default=128, help="greedy tokens per prompt")
    ap.add_argument("--quick", action="store_true", help="1 window of 64 tokens, 4 new tokens: only checks that it runs")
    args = ap.parse_args()
    if args.quick:
        args.windows, args.window, args.new = 1, 64, 4

    import lmatlas
    from lmatlas.defaults import generative_model

    file = generative_model()
    tokenizer = lmatlas.load_tokenizer(file)
    print(f"load average at start: {os.getloadavg()[0]:.1f} (1 min); torch threads {torch.get_num_threads()}; "
          f"{file.name}")
    corpora = {name: windows(tokenizer, text, args.windows, args.window) for name, text in texts().items()}
    variants = {
        "float32": dict(dequantize=True),
        "file (Q4_1, head Q8_0)": dict(),
        "q8_0": dict(dequantize=True, quantize="q8_0"),
        "q4_0 (head q8_0)": dict(dequantize=True, quantize="q4_0"),
        "q4_1 (head q8_0)": dict(dequantize=True, quantize="q4_1"),
    }
    rows, baseline = [], None
    for name, options in variants.items():
        start = time.perf_counter()
        model = lmatlas.load(file, **options)
        loaded = time.perf_counter() - start
        ppl = {corpus: (perplexity(model, parts, False), perplexity(model, parts, True))
               for corpus, parts in corpora.items()}
        tokens = greedy(model, tokenizer, args.new)
        baseline = baseline or tokens
        prefix, same = agreement(baseline, tokens)
        rows.append((name, ppl, prefix, same))
        cells = "  ".join(f"{c}: weights {w:.3f} runtime {r:.3f}" for c, (w, r) in ppl.items())
        print(f"{name:24s} loaded in {loaded:5.1f} s  {cells}  greedy: {prefix:5.1f} tokens before the first "
              f"difference, {same:.1%} of positions agree", flush=True)
        del model
    print()
    header = " | ".join(f"{c} ppl (weights / runtime)" for c in corpora)
    print(f"| model | {header} | greedy: tokens before 1st difference (of {args.new}) | positions agreeing |")
    print("|---|" + "---|" * len(corpora) + "---|---|")
    for name, ppl, prefix, same in rows:
        cells = " | ".join(f"{w:.2f} / {r:.2f}" for w, r in ppl.values())
        print(f"| {name} | {cells} | {prefix:.1f} | {same:.1%} |")
    print(f"({args.windows} windows of {args.window} tokens per corpus, {len(PROMPTS)} prompts; "
          f"load average at end: {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
