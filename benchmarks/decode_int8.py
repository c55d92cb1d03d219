"""8-bit weights, lmatlas against CTranslate2, side by side in one run: GPT-2 124M's shape
(GPT2Config() defaults, random weights written once by transformers), lmatlas with its matrices
in Q8_0 blocks (``quantize="q8_0"``, run by the runtime's integer kernels) and CTranslate2 with
``int8`` weights converted from the same checkpoint; both also in float32.

CTranslate2 is not among lmatlas' dependencies: give the site-packages folder of an environment
that has it. It runs in a worker process (``_ctranslate2_worker.py``, this Python with that folder
on its path, for the converter's transformers) that times its own calls: in this process, its
OpenMP runtime slowed lmatlas' decoding by a third once it had run::

    python -m venv /tmp/ct2env && /tmp/ct2env/bin/pip install ctranslate2==4.8.5
    python benchmarks/decode_int8.py --ctranslate2 /tmp/ct2env/lib/python3.11/site-packages

Greedy decoding of 128 new tokens at batch 1 and 64 at batch 8 after 32-token prompts from
Shakespeare (the real GPT-2 tokenizer), the end-of-text token kept from ending a sequence; each
time the best of --repeats runs, the sides alternating. Reports tokens/s and the ratios, and how
many greedy tokens lmatlas Q8_0 and CTranslate2 int8 share with their own float32.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from decode_gpt2 import DATA, prompts

# Seconds of rest before each timed run: an OpenMP runtime's threads spin for a while after their
# work (Intel's, which CTranslate2 uses, 200 ms by default), which would slow whoever runs next.
QUIET = 0.5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctranslate2", required=True, help="site-packages of an environment with ctranslate2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--folder", default=None, help="reuse a GPT-2 checkpoint folder (decode_gpt2.py's)")
    ap.add_argument("--quick", action="store_true", help="8 and 4 new tokens, one run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    import transformers

    import lmatlas
    from lmatlas.runtime import quant_kernels
    from lmatlas.tokenizer import load_tokenizer

    transformers.logging.set_verbosity_error()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="lmatlas-gpt2-int8-"))
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(folder)
        for name in ("vocab.json", "merges.txt"):
            (folder / name).write_bytes((DATA / "gpt2-tokenizer" / name).read_bytes())
    tok = load_tokenizer(folder)
    pieces = {i: t for t, i in json.loads((folder / "vocab.json").read_text(encoding="utf-8")).items()}
    work = Path(tempfile.mkdtemp(prefix="lmatlas-ct2-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), args.ctranslate2]))}
    worker = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_ctranslate2_worker.py"), str(folder),
                               str(work), str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    ready = json.loads(worker.stdout.readline() or "{}")
    if not ready.get("ready"):
        raise SystemExit(f"the CTranslate2 worker did not start with {args.ctranslate2} on its path")
    cases = [(1, 8), (8, 4)] if args.quick else [(1, 128), (8, 64)]
    repeats = 1 if args.quick else args.repeats

    print(f"load average at start: {os.getloadavg()[0]:.1f} (1 min)")
    print(f"torch {torch.__version__}, ctranslate2 {ready['version']} (its own process), {threads} threads on both sides; "
          f"lmatlas' quantized kernels: {quant_kernels.quant_path()}")
    ours = {"lmatlas float32": lmatlas.load(folder), "lmatlas q8_0": lmatlas.load(folder, quantize="q8_0")}
    theirs = {f"ctranslate2 {q}": q for q in ("float32", "int8")}

    def run_ours(model, ids, new):
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new)
        return time.perf_counter() - start, out[:, ids.shape[1]:].tolist()

    def run_theirs(kind, ids, new):
        batch = [[pieces[i] for i in row] for row in ids.tolist()]
        worker.stdin.write(json.dumps({"type": kind, "batch": batch, "new": new}) + "\n")
        worker.stdin.flush()
        reply = json.loads(worker.stdout.readline())  # timed in the worker, without the pipe
        return reply["seconds"], reply["ids"]

    sides = {**{n: (run_ours, m) for n, m in ours.items()}, **{n: (run_theirs, g) for n, g in theirs.items()}}
    speed, tokens = {}, {}
    for batch, new in cases:
        ids = prompts(tok, batch)
        for run, model in sides.values():  # warm up
            run(model, ids, new)
        best = {name: float("inf") for name in sides}
        for _ in range(repeats):
            for name, (run, model) in sides.items():
                time.sleep(QUIET)
                seconds, tokens[(name, batch)] = run(model, ids, new)
                best[name] = min(best[name], seconds)
        for name in sides:
            speed[(name, batch)] = batch * new / best[name]
            print(f"  {name:20s} batch {batch}: {speed[(name, batch)]:7.1f} tok/s", flush=True)

    print()
    for batch, new in cases:
        q8, i8 = speed[("lmatlas q8_0", batch)], speed[("ctranslate2 int8", batch)]
        f32, c32 = speed[("lmatlas float32", batch)], speed[("ctranslate2 float32", batch)]
        print(f"batch {batch}: lmatlas q8_0 / ctranslate2 int8 {q8 / i8:.2f}x; "
              f"lmatlas float32 / ctranslate2 float32 {f32 / c32:.2f}x; q8_0 / float32 {q8 / f32:.2f}x")
    for batch, new in cases:
        for mine, ref in (("lmatlas q8_0", "lmatlas float32"), ("ctranslate2 int8", "ctranslate2 float32")):
            a, b = tokens[(mine, batch)], tokens[(ref, batch)]
            same = sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb))
            print(f"batch {batch}: {mine} greedy tokens equal to {ref}'s at {same} of {batch * new} positions")
    worker.stdin.close()
    worker.wait(timeout=60)
    print(f"load average at end: {os.getloadavg()[0]:.1f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
