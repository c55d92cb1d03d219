"""`lmatlas estimate NAME|PATH`: parameters, FLOPs, memory, KV cache and a decoding speed bound."""

from __future__ import annotations

import json


HELP = "the numbers before you run: parameters, FLOPs, memory, KV cache, decode speed bound"
DESCRIPTION = (
    "Estimate a catalogue model (GPT-3), an architecture preset (llama-7b) or a local "
    "checkpoint folder, whose parameters are counted exactly from its weight files."
)


def arguments(p) -> None:
    """The arguments of `lmatlas estimate`, on its parser (made by ``lmatlas.cli``)."""
    p.add_argument("target", metavar="NAME|PATH", help="catalogue name, architecture preset or model folder")
    p.add_argument("--dtype", default="bfloat16", help="float32, bfloat16 (default), float16, int8 or int4")
    p.add_argument("--batch", default="1", help="sequences at once (default 1)")
    p.add_argument("--seq", default=None, help="tokens per sequence (default: the model's context length)")
    p.add_argument("--tokens", default=None, help="training tokens for the 6ND figure: 300B, 1.4T (default: the catalogue's, else compute-optimal)")
    p.add_argument("--bandwidth", default=None, help="memory bandwidth in GB/s, e.g. 50 or 1.5TB/s (default: measured here)")
    p.add_argument("--json", action="store_true", help="machine-readable output (plain numbers, bytes and FLOPs)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..estimate import bandwidth, estimate, format_estimate

    # The command measures this machine unless told the bandwidth; the library never times.
    if args.bandwidth is None:
        bytes_per_s, source = bandwidth.measure_bandwidth(), "measured"
    else:
        bytes_per_s, source = bandwidth.parse_bandwidth(args.bandwidth), "--bandwidth"
    est = estimate(
        args.target,
        dtype=args.dtype,
        batch=args.batch,
        seq=args.seq,
        tokens=args.tokens,
        bandwidth=bytes_per_s,
        bandwidth_source=source,
    )
    print(json.dumps(est.to_dict(), indent=2) if args.json else format_estimate(est))
    return 0
