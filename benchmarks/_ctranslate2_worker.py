"""The CTranslate2 side of ``decode_int8.py``, in a process of its own (CTranslate2's OpenMP
runtime, once started, changes how the process' threads are scheduled, which slowed lmatlas by a
third in the same process): converts a transformers checkpoint for each compute type, then
answers timing requests, one JSON object a line on stdin and stdout.

    python _ctranslate2_worker.py FOLDER WORKDIR THREADS
    {"type": "int8", "batch": [[token, ...], ...], "new": 128}  -> {"seconds": s, "ids": [[...], ...]}
"""

import json
import sys
import time

import ctranslate2
from ctranslate2.converters import TransformersConverter


def main() -> None:
    folder, work, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    generators = {}
    for kind in ("int8", "float32"):
        TransformersConverter(folder).convert(f"{work}/{kind}", quantization=kind, force=True)
        generators[kind] = ctranslate2.Generator(f"{work}/{kind}", device="cpu", compute_type=kind,
                                                 intra_threads=threads, inter_threads=1)
    print(json.dumps({"ready": True, "version": ctranslate2.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        results = generators[request["type"]].generate_batch(
            request["batch"], max_length=request["new"], min_length=request["new"], sampling_topk=1, beam_size=1,
            include_prompt_in_result=False)
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "ids": [r.sequences_ids[0] for r in results]}), flush=True)


if __name__ == "__main__":
    main()
