"""Continuous batching under load: `lmatlas serve` (in this process, on a loopback port) answers
N streamed chat completions sent at once, against the same N sent one after another.

For each way: time to first token (p50, p99), time per output token after the first (p50), and
the aggregate tokens per second; then the ratio of the aggregates. Greedy decoding, so both ways
generate the same tokens (the replies are compared).

    python benchmarks/serve_load.py [--model M] [--n 16] [--new 64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lmatlas.serve import ServerConfig  # noqa: E402
from lmatlas.serve.background import running  # noqa: E402

TOPICS = ["the sea", "bread", "rockets", "the moon", "cats", "rain", "Paris", "trees", "music", "chess",
          "winter", "bees", "trains", "coffee", "mountains", "libraries", "clouds", "bicycles", "honey", "ink"]


def one_chat(url: str, topic: str, new: int) -> dict:
    """A streamed chat: when its first token came, when it ended, its tokens and text."""
    body = {"messages": [{"role": "user", "content": f"Write a few sentences about {topic}."}], "temperature": 0,
            "max_tokens": new, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, text, tokens = None, [], 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=3600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    first = first or time.perf_counter()
                    text.append(choice["delta"]["content"])
    end = time.perf_counter()
    first = first or end
    return {"ttft": first - start, "tpot": (end - first) / max(1, tokens - 1), "tokens": tokens, "text": "".join(text),
            "start": start, "end": end}


def run(url: str, n: int, new: int, together: bool) -> tuple[list[dict], float]:
    results: list = [None] * n
    t = time.perf_counter()
    if together:
        def go(i):
            results[i] = one_chat(url, TOPICS[i % len(TOPICS)], new)

        threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    else:
        for i in range(n):
            results[i] = one_chat(url, TOPICS[i % len(TOPICS)], new)
    return results, time.perf_counter() - t


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="chat model (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--n", type=int, default=16, help="chats (default 16)")
    ap.add_argument("--new", type=int, default=64, help="max_tokens of each (default 64)")
    ap.add_argument("--quick", action="store_true", help="4 chats of 8 tokens: only checks that it runs")
    args = ap.parse_args()
    if args.quick:
        args.n, args.new = 4, 8
    config = ServerConfig(model=args.model, max_concurrent=max(16, args.n), max_queue=max(64, args.n))
    with running(config) as served:
        one_chat(served.url, "warming up", 4)  # the kernels' first build and packing
        sizes_before = served.state.engine.steps
        rows = {}
        for name, together in (("one after another", False), (f"{args.n} at once", True)):
            results, wall = run(served.url, args.n, args.new, together)
            rows[name] = (results, wall)
        steps = list(served.state.engine.sizes)[sizes_before - served.state.engine.steps:]
    print(f"{args.n} streamed chats of at most {args.new} tokens, greedy; model: {args.model or 'SmolLM2-135M-Instruct'}")
    print(f"{'':20s} {'TTFT p50':>9s} {'TTFT p99':>9s} {'ms/token p50':>13s} {'tokens':>7s} {'wall s':>7s} {'tokens/s':>9s}")
    rate = {}
    for name, (results, wall) in rows.items():
        tokens = sum(r["tokens"] for r in results)
        rate[name] = tokens / wall
        print(f"{name:20s} {pct([r['ttft'] for r in results], .5):9.2f} {pct([r['ttft'] for r in results], .99):9.2f} "
              f"{statistics.median(r['tpot'] for r in results) * 1e3:13.1f} {tokens:7d} {wall:7.1f} {rate[name]:9.1f}")
    alone, together = rows.values()
    same = sum(a["text"] == b["text"] for a, b in zip(alone[0], together[0]))
    print(f"aggregate tokens/s, at once / one after another: {rate[f'{args.n} at once'] / rate['one after another']:.2f}x;"
          f" largest decode batch {max(steps, default=0)}; replies identical: {same}/{args.n}")


if __name__ == "__main__":
    main()
