"""An estimate as a readable table, in units for people (binary units for memory)."""

from __future__ import annotations

from ..catalog import format_count
from .result import Estimate


def _num(x: float) -> str:
    """Three significant digits, never in scientific notation below a million."""
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{_num(n / scale)} {unit}"
    return f"{_num(n)} B"


def format_flops(n: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= scale:
            text = f"{_num(n / scale)} {unit}"
            return f"{text} ({n:.3g})" if n >= 1e21 else text
    return f"{n:.3g} FLOP"


def _breakdown(parts: dict[str, float]) -> str:
    return ", ".join(f"{k} {format_bytes(v)}" for k, v in parts.items())


def format_estimate(est: Estimate) -> str:
    """A readable table with units."""
    title = est.name
    if est.preset and est.preset != est.name:
        title += f"  (preset {est.preset})"
    if est.source == "folder":
        title += "  (checkpoint folder)"
    rows: list[tuple[str, str]] = []
    params = f"{format_count(est.params, 4)}  ({est.params:,})"
    if est.params_exact:
        params += "  counted in the weight files"
    elif est.published_params and est.preset:
        params += f"  published {format_count(est.published_params)}"
    rows.append(("parameters", params))
    if est.embedding_params is not None:
        rows.append(("  of which lookup tables", format_count(est.embedding_params, 3)))
    if est.active_params is not None:
        rows.append(("  active per token", f"{format_count(est.active_params, 4)}  (one expert of each mixture)"))
    attn = f"{format_flops(est.flops_per_token)} at seq {est.seq}"
    if est.flops_per_token_attention:
        attn += f"  (matmuls {format_flops(est.flops_per_token_matmul)} + attention {format_flops(est.flops_per_token_attention)})"
    rows.append(("forward FLOPs / token", attn))
    rows.append((
        "training FLOPs (6ND)",
        f"{est.train_flops:.3g} FLOP for {format_count(est.train_tokens)} tokens ({est.train_tokens_source})",
    ))
    rows.append((
        "compute-optimal tokens",
        f"{format_count(est.chinchilla_tokens)}  ({est.chinchilla_tokens / est.params:.1f} per parameter, Chinchilla)",
    ))
    rows.append(("weights", "  ".join(f"{d} {format_bytes(b)}" for d, b in est.weights_bytes.items())))
    rows.append((
        f"KV cache / token ({est.dtype})",
        "-" if est.kv_cache_bytes_per_token is None else format_bytes(est.kv_cache_bytes_per_token),
    ))
    rows.append((
        f"inference memory ({est.dtype})",
        f"{format_bytes(est.inference_bytes)} at batch {est.batch} x seq {est.seq}  ({_breakdown(est.inference_breakdown)})",
    ))
    training = "-"
    if est.training_bytes is not None:
        training = f"{format_bytes(est.training_bytes)}  ({_breakdown(est.training_breakdown)})"
    rows.append(("training memory (AdamW)", training))
    rows.append(("decode bound", _decode_row(est)))
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines)


def _decode_row(est: Estimate) -> str:
    if est.bandwidth_bytes_per_s is None:
        return "-  (no memory bandwidth given)"
    bw = f"{_num(est.bandwidth_bytes_per_s / 1e9)} GB/s ({est.bandwidth_source})"
    if est.decode_tokens_per_s_bound is None:
        return f"-  (memory bandwidth {bw})"
    return f"{_num(est.decode_tokens_per_s_bound)} tokens/s at {bw}, batch {est.batch}"
