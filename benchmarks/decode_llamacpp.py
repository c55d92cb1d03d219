"""The packaged SmolLM2-135M-Instruct Q4_1 GGUF file, lmatlas against llama.cpp, side by side in
one run: the same file, the same thread count, the same prompts.

lmatlas loads the file as it does by default (its matrices kept in their Q4_1 blocks, run by the
runtime's integer kernels); llama.cpp is ``llama-cpp-python``, which lmatlas does not depend on:
give the Python of an environment that has it (built from its PyPI source, so for this CPU)::

    python -m venv /tmp/llamaenv && /tmp/llamaenv/bin/pip install llama-cpp-python==0.3.36
    python benchmarks/decode_llamacpp.py --llama-python /tmp/llamaenv/bin/python [--threads 2]

It runs in a worker process (``_llamacpp_worker.py``) that times its own calls. Measures, each the
best of --repeats runs with the two sides alternating:

- decoding at batch 1: --new greedy tokens after one chat prompt, less the time of the prompt's
  pass and first token, as tokens/s of the steps alone (and of the whole call);
- a 512-token prompt (Shakespeare) read and one token chosen, as prompt tokens/s;
- how many of the --new greedy tokens agree (both sides quantize the activations to 8 bits for
  their integer dot products, in different orders, so they may part after a while), and the
  same for the first 24 tokens of the replies to four short chat questions, with lmatlas' reply.

The end-of-sequence token is kept from ending the reply on both sides. On a shared machine
absolute times are noise: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# Seconds of rest before each timed run: the other side's threads may still be spinning after
# their work (in another process here), which would slow whoever runs next.
QUIET = 0.5
QUESTION = "Explain in two sentences why the sky is blue, and what changes at sunset."
QUESTIONS = ("What is the capital of France?", "How many legs does a spider have?", "Name three primary colours.",
             "Why is the sky blue?")


class LlamaCpp:
    """The worker process: one request at a time, its own timing."""

    def __init__(self, python: str, file: Path, threads: int):
        self.process = subprocess.Popen([python, str(ROOT / "benchmarks" / "_llamacpp_worker.py"), str(file), str(threads)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self.process.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise SystemExit(f"the llama.cpp worker did not start with {python}")

    def generate(self, ids: list[int], new: int, suppress: int | None) -> dict:
        self.process.stdin.write(json.dumps({"ids": ids, "new": new, "suppress": suppress}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-python", required=True, help="a Python with llama-cpp-python installed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="both sides (default: torch's count)")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=512, help="tokens of the long prompt")
    ap.add_argument("--file", default=None, help="another GGUF file of the same model (default: the packaged Q4_1 file)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    import lmatlas
    from lmatlas.chat import apply_chat_template
    from lmatlas.defaults import generative_model
    from lmatlas.gguf import read_tokenizer
    from lmatlas.runtime import quant_kernels

    file = Path(args.file) if args.file else generative_model()
    tok = read_tokenizer(file)
    eos = tok.eos_token_id
    chat = tok.encode(apply_chat_template(tok, [{"role": "user", "content": QUESTION}], add_generation_prompt=True),
                      add_special_tokens=False)
    text = (ROOT / "tests" / "data" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    long = tok.encode(text[:20000], add_special_tokens=False)[: args.prompt]
    assert len(long) == args.prompt, len(long)

    print(f"load average at start: {os.getloadavg()[0]:.1f} (1 min)")
    print(f"{file.name} ({file.stat().st_size / 1e6:.0f} MB), {threads} threads on both sides, "
          f"lmatlas' quantized kernels: {quant_kernels.quant_path()}")
    model = lmatlas.load(file)
    llama = LlamaCpp(args.llama_python, file, threads)

    def ours(ids: list[int], new: int) -> tuple[float, list[int]]:
        start = time.perf_counter()
        out = model.generate(torch.tensor([ids]), max_new_tokens=new, min_new_tokens=new)
        return time.perf_counter() - start, out[0, len(ids):].tolist()

    def theirs(ids: list[int], new: int) -> tuple[float, list[int]]:
        reply = llama.generate(ids, new, eos)  # timed by the worker, without the pipe
        return reply["seconds"], reply["tokens"]

    for ids, new in ((chat, args.new), (chat, 1), (long, 1)):  # warm both up (the kernels, the caches)
        ours(ids, new)
        theirs(ids, new)
    results = {}
    for name, ids, new in (("decode", chat, args.new), ("first", chat, 1), ("prompt", long, 1)):
        best = {"lmatlas": (float("inf"), None), "llama.cpp": (float("inf"), None)}
        for _ in range(args.repeats):  # alternating, so that a change in the load touches both
            for side, run in (("lmatlas", ours), ("llama.cpp", theirs)):
                time.sleep(QUIET)
                seconds, tokens = run(ids, new)
                best[side] = min(best[side], (seconds, tokens), key=lambda x: x[0])
        results[name] = best
        print(f"  {name:7s} ({len(ids)} prompt tokens, {new} new): lmatlas {best['lmatlas'][0] * 1e3:8.1f} ms, "
              f"llama.cpp {best['llama.cpp'][0] * 1e3:8.1f} ms", flush=True)
    replies = []
    for question in QUESTIONS:
        ids = tok.encode(apply_chat_template(tok, [{"role": "user", "content": question}], add_generation_prompt=True),
                         add_special_tokens=False)
        replies.append((question, ours(ids, 24)[1], theirs(ids, 24)[1]))
    llama.close()

    print()
    steps = args.new - 1
    rows = []
    for side in ("lmatlas", "llama.cpp"):
        decode = steps / (results["decode"][side][0] - results["first"][side][0])
        whole = args.new / results["decode"][side][0]
        prompt = args.prompt / results["prompt"][side][0]
        rows.append((side, decode, whole, prompt))
        print(f"{side:10s} decode {decode:6.1f} tok/s (steps alone; {whole:6.1f} with the prompt), "
              f"{args.prompt}-token prompt {prompt:7.1f} tok/s")
    (_, d0, w0, p0), (_, d1, w1, p1) = rows
    print(f"lmatlas / llama.cpp: decode {d0 / d1:.2f}x (whole call {w0 / w1:.2f}x), prompt {p0 / p1:.2f}x")
    a, b = results["decode"]["lmatlas"][1], results["decode"]["llama.cpp"][1]
    agree = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
    print(f"greedy tokens: the first {agree} of {args.new} agree, {sum(x == y for x, y in zip(a, b))} in the same places")
    for question, a, b in replies:
        agree = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        print(f"{question!r}: the first {agree} of {len(a)} tokens agree; lmatlas: {tok.decode(a)!r}")
    print(f"load average at end: {os.getloadavg()[0]:.1f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
