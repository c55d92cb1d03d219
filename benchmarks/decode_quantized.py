"""Decoding speed of quantized matrices, side by side: SmolLM2-135M-Instruct in float32 and with
its matrices in Q8_0, Q4_0 and Q4_1 blocks (decoded through the runtime's integer kernels), and
the packaged file as it loads by default (Q4_1, head Q8_0).

The float32 model is the packaged Q4_1 file dequantized; the quantized ones are lmatlas'
quantization of it (``quantize=``). Greedy decoding of --new tokens after one chat prompt
(batch 1) and half as many after eight left-padded chat prompts (batch 8), EOS disabled so that
every run has the same length; each time the best of --repeats runs, the variants alternating.
Reports tokens/s (new tokens of the whole batch per second), each variant's ratio to float32,
and the bytes of weights a batch-1 step reads. Also the kernels' path this CPU takes.

    python benchmarks/decode_quantized.py [--repeats 3] [--threads N] [--new 64] [--quick]

On a shared machine absolute times are noise: read the ratios.
"""

from __future__ import annotations

import os
import sys

import torch
from _timing import alternated_best

from decode_smollm2 import QUESTIONS, arguments

VARIANTS = {
    "float32": dict(dequantize=True),
    "q8_0": dict(dequantize=True, quantize="q8_0"),
    "q4_0": dict(dequantize=True, quantize="q4_0"),
    "q4_1": dict(dequantize=True, quantize="q4_1"),
    "file (q4_1)": dict(),
}


def chat_batch(tokenizer, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The questions as chat prompts, left-padded: ids, mask and the padding id."""
    from lmatlas.chat import apply_chat_template

    rows = []
    for question in questions:
        text = apply_chat_template(tokenizer, [{"role": "user", "content": question}], add_generation_prompt=True)
        rows.append(tokenizer.encode(text, add_special_tokens=False))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    longest = max(map(len, rows))
    ids = torch.tensor([[pad] * (longest - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows])
    return ids, mask, pad


def step_bytes(model) -> int:
    """Bytes of weights one batch-1 step reads: every matrix (blocks or float) and every norm,
    the token embeddings' one row aside."""
    from lmatlas.runtime.quantized import QuantizedLinear

    total, seen = 0, set()
    for name, m in model.named_modules():
        if isinstance(m, QuantizedLinear):
            total += m.blocks.numel()
        for pname, p in m.named_parameters(recurse=False):
            if p.data_ptr() in seen or "embeddings" in name:
                continue
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def main() -> int:
    args = arguments(__doc__, 64, 4)

    import lmatlas
    from lmatlas.defaults import generative_model
    from lmatlas.runtime import quant_kernels

    file = generative_model()
    tokenizer = lmatlas.load_tokenizer(file)
    print(f"load average at start: {os.getloadavg()[0]:.1f} (1 min); threads {torch.get_num_threads()}, "
          f"CPU {os.cpu_count()}; quantized kernels: paths {', '.join(quant_kernels.quant_paths())}, "
          f"taking {quant_kernels.quant_path()}")
    models = {name: lmatlas.load(file, **options) for name, options in VARIANTS.items()}
    for name, model in models.items():
        print(f"  {name:12s} a batch-1 step reads {step_bytes(model) / 1e6:6.1f} MB of weights")
    cases = [(1, args.new), (8, max(1, args.new // 2))]
    speed: dict[tuple[str, int], float] = {}
    for batch, new in cases:
        ids, mask, pad = chat_batch(tokenizer, QUESTIONS[:batch])

        def decode(model, ids=ids, mask=mask, pad=pad, new=new):
            return model.generate(ids, mask, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=pad)

        for model in models.values():  # warm up: kernels built, caches made
            decode(model)
        times = alternated_best({name: (lambda m=model: decode(m)) for name, model in models.items()}, args.repeats)
        for name, (seconds, _) in times.items():
            speed[(name, batch)] = batch * new / seconds
            print(f"  {name:12s} batch {batch}: {batch * new / seconds:7.1f} tok/s ({seconds * 1e3 / new:6.1f} ms/step)",
                  flush=True)
    print()
    print("| model | batch 1 tok/s | x float32 | batch 8 tok/s | x float32 |")
    print("|---|---|---|---|---|")
    for name in models:
        cells = " | ".join(f"{speed[(name, b)]:.1f} | {speed[(name, b)] / speed[('float32', b)]:.2f}" for b, _ in cases)
        print(f"| {name} | {cells} |")
    print(f"load average at end: {os.getloadavg()[0]:.1f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
