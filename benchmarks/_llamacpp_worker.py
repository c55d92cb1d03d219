"""The llama.cpp side of ``decode_llamacpp.py``, run by the Python of an environment with
``llama-cpp-python`` (not lmatlas'): loads a GGUF file and answers timing requests, one JSON
object a line on stdin and stdout.

    {"ids": [...], "new": 128, "suppress": 2}  -> {"seconds": s, "tokens": [...]}

Greedy decoding by argmax over the logits, ``suppress`` (the end-of-sequence token) never
chosen, as lmatlas' ``min_new_tokens`` does; the time
is that of the prompt's pass and the ``new`` - 1 one-token steps after it (the same work as
lmatlas' ``generate(..., max_new_tokens=new)``).
"""

import json
import sys
import time

import numpy as np
from llama_cpp import Llama


def main() -> None:
    path, threads = sys.argv[1], int(sys.argv[2])
    llm = Llama(path, n_threads=threads, n_threads_batch=threads, n_ctx=2048, n_batch=512, verbose=False)
    vocab = llm.n_vocab()
    print(json.dumps({"ready": True, "n_vocab": vocab}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        llm.reset()
        tokens = []
        start = time.perf_counter()
        llm.eval(request["ids"])
        for step in range(request["new"]):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))
            if request.get("suppress") is not None:
                logits = logits.copy()
                logits[request["suppress"]] = -np.inf
            tokens.append(int(np.argmax(logits)))
            if step + 1 < request["new"]:
                llm.eval([tokens[-1]])
        print(json.dumps({"seconds": time.perf_counter() - start, "tokens": tokens}), flush=True)


if __name__ == "__main__":
    main()
