"""SmolLM2-135M-Instruct from its GGUF file, lmatlas against transformers, side by side in one run.

The default generative model (``lmatlas.defaults.generative_model()``, a Q4_1 file), which both
sides dequantize to float32 on loading. Measures the load time, the peak resident memory each
model adds (loaded and run), and greedy decoding speed: --new tokens after one chat-templated
prompt (batch 1) and half as many after eight chat prompts of different lengths, left-padded
(batch 8); EOS disabled so every run has the same length. Prompts are rendered and encoded by
lmatlas' tokenizer, and checked against transformers' ``apply_chat_template``. Each time is the
best of --repeats runs, the two sides alternating. Reports tokens/s (new tokens of the whole
batch per second), the ratios, whether the tokens agree, and at batch 1 how close a token comes
to the time it takes to stream the float32 weights once from memory (the bandwidth bound).

    python benchmarks/decode_smollm2.py [--repeats 3] [--threads N] [--new 128] [--quick]

Ratios are what to read: absolute times on a shared machine are noise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import sys

import torch
from _timing import alternated_best, hwm_mb, memory_bandwidth_gbs, report_bound, reset_peak, rss_mb

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue, and what changes at sunset.",
    "List three uses of a paperclip.",
    "How do I boil an egg so that the yolk stays soft but the white is firm?",
    "Translate 'good morning' into Spanish.",
    "What is a prime number? Give an example larger than one hundred and say how you know it is prime.",
    "Name a planet.",
]


def chat_prompts(tokenizer, reference, batch: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Left-padded ids (batch, longest), their mask, and whether transformers renders and encodes
    the same ids."""
    from lmatlas.chat import apply_chat_template

    rows, same = [], True
    for question in QUESTIONS[:batch]:
        messages = [{"role": "user", "content": question}]
        text = apply_chat_template(tokenizer, messages, add_generation_prompt=True)
        rows.append(tokenizer.encode(text, add_special_tokens=False))
        same &= rows[-1] == list(reference.apply_chat_template(messages, add_generation_prompt=True))
    longest = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (longest - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows])
    return ids, mask, same


def arguments(doc: str, new: int, quick_new: int) -> argparse.Namespace:
    """--repeats, --threads, --new and --quick, as the decoding benchmarks of SmolLM2 take them
    (the thread count applied)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--new", type=int, default=new, help="new tokens at batch 1; batch 8 decodes half as many")
    ap.add_argument("--quick", action="store_true", help=f"one run of {quick_new} new tokens: only checks that it runs")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.new = 1, quick_new
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> int:
    args = arguments(__doc__, 128, 8)

    import transformers

    import lmatlas
    from lmatlas.defaults import generative_model
    from lmatlas.gguf import read_tokenizer

    transformers.logging.set_verbosity_error()
    file = generative_model()
    tok = read_tokenizer(file)
    reference_tok = transformers.AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    cases = [(1, args.new), (8, max(1, args.new // 2))]
    inputs = {batch: chat_prompts(tok, reference_tok, batch, pad_id) for batch, _ in cases}

    def load_lmatlas():
        return lmatlas.load(file, dequantize=True)  # float32, as transformers (see decode_quantized.py)

    def load_transformers():
        # Its GGUF loader draws a progress bar with tqdm directly, past transformers' own switch.
        with contextlib.redirect_stderr(io.StringIO()):
            return transformers.AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name).eval()

    def ours(model, ids, mask, new):
        return model.generate(ids, mask, max_new_tokens=new, min_new_tokens=new, pad_token_id=pad_id)

    def hf(model, ids, mask, new):
        with torch.inference_mode():
            return model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                  do_sample=False, pad_token_id=pad_id)

    print(f"load average at start: {os.getloadavg()[0]:.1f} (1 min)")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"CPU {os.cpu_count()}; {file.name}, {file.stat().st_size / 1e6:.0f} MB")

    # Load each model and warm it up on both cases, noting the memory it adds.
    memory: dict[str, float] = {}
    models = {}
    for name, load, generate in (("lmatlas", load_lmatlas, ours), ("transformers", load_transformers, hf)):
        gc.collect()
        reset_peak()
        base = rss_mb()
        model = load()
        for batch, new in cases:
            generate(model, *inputs[batch][:2], new)
        memory[name] = hwm_mb() - base
        models[name] = model
        print(f"  loaded and warmed up {name} (+{memory[name]:.0f} MB peak)", flush=True)

    # Every step reads every weight once (the tied embedding once, as the LM head).
    unique = {p.data_ptr(): p for p in models["lmatlas"].parameters()}.values()
    weight_bytes = sum(p.numel() * p.element_size() for p in unique)
    bw = memory_bandwidth_gbs()
    print(f"weights {weight_bytes / 1e6:.0f} MB float32; memory read bandwidth now: {bw:.1f} GB/s -> "
          f"bound at batch 1: {bw * 1e9 / weight_bytes:.1f} tok/s")

    # Loading again, timed: each model is dropped as soon as it is built.
    def dropped(load):
        def run() -> None:
            load()
        return run

    loads = alternated_best({"lmatlas": dropped(load_lmatlas), "transformers": dropped(load_transformers)},
                            args.repeats)
    print(f"  load: lmatlas {loads['lmatlas'][0]:.2f} s, transformers {loads['transformers'][0]:.2f} s", flush=True)

    speed: dict[tuple[str, int], float] = {}
    same: dict[int, bool] = {}
    for batch, new in cases:
        ids, mask, _ = inputs[batch]
        times = alternated_best({"lmatlas": lambda: ours(models["lmatlas"], ids, mask, new),
                                 "transformers": lambda: hf(models["transformers"], ids, mask, new)}, args.repeats)
        (t_ours, out_ours), (t_hf, out_hf) = times["lmatlas"], times["transformers"]
        assert out_ours.shape[1] == ids.shape[1] + new, out_ours.shape
        same[batch] = torch.equal(out_ours, out_hf)
        for name, seconds in (("lmatlas", t_ours), ("transformers", t_hf)):
            speed[(name, batch)] = batch * new / seconds
            print(f"  {name:12s} batch {batch}: {batch * new / seconds:7.1f} tok/s  ({seconds * 1e3 / new:6.1f} ms/step)",
                  flush=True)

    print()
    print("prompt ids identical to transformers' apply_chat_template: "
          + ", ".join(f"batch {b}: {inputs[b][2]}" for b, _ in cases))
    for batch, new in cases:
        print(f"batch {batch} ({tuple(inputs[batch][0].shape)} prompt, {new} new): "
              f"lmatlas tokens identical to transformers: {same[batch]}")
    print(f"load time: lmatlas {loads['lmatlas'][0]:.2f} s, transformers {loads['transformers'][0]:.2f} s "
          f"({loads['transformers'][0] / loads['lmatlas'][0]:.2f}x)")
    print("decoding, lmatlas vs transformers: "
          + ", ".join(f"batch {b}: {speed[('lmatlas', b)] / speed[('transformers', b)]:.2f}x" for b, _ in cases))
    print("peak RSS added by each model, loaded and run (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    for name in models:
        report_bound(name, speed[(name, 1)], weight_bytes, bw)
    print(f"load average at end: {os.getloadavg()[0]:.1f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
