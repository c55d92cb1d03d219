"""The estimate of one model: parameters, FLOPs, training tokens, memory, KV cache and the
decoding speed bound, as arithmetic on its shape and the memory bandwidth it is given.

Conventions, so that the figures compare with the papers': FLOPs as in ``counting``; training
costs 6 · N · D FLOPs for N parameters and D tokens (forward 2, backward 4); memory is in bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog import parse_quantity
from ..errors import LmatlasError
from .counting import count_params, forward_flops
from .target import Target, resolve

# Bytes per parameter (and per cached key/value element) for each dtype people deploy in.
DTYPE_BYTES: dict[str, float] = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1, "int4": 0.5}
_FLOAT_DTYPES = ("float32", "bfloat16", "float16")
_DTYPE_ALIASES = {
    "fp32": "float32", "f32": "float32", "float": "float32",
    "bf16": "bfloat16",
    "fp16": "float16", "f16": "float16", "half": "float16",
    "i8": "int8", "q8": "int8",
    "i4": "int4", "q4": "int4",
}

# Chinchilla's compute-optimal table (Hoffmann et al. 2022, Table 3, from their first approach):
# the tokens to train N parameters on grow as N^(b/a), a little faster than N, since their
# fitted exponents are a = 0.50 for parameters and b = 0.50 for tokens rounded, not exactly.
# The two ends of the table fix the line: 400M -> 8.0B tokens and 10T -> 216.2T tokens.
_CHINCHILLA_N0, _CHINCHILLA_D0 = 400e6, 8.0e9
CHINCHILLA_SLOPE = math.log(216.2e12 / _CHINCHILLA_D0) / math.log(10e12 / _CHINCHILLA_N0)


def chinchilla_tokens(params: float) -> float:
    """Compute-optimal training tokens for a model of ``params`` parameters (about 20 each)."""
    if params <= 0:
        raise LmatlasError(f"parameters must be positive, not {params}")
    return _CHINCHILLA_D0 * (params / _CHINCHILLA_N0) ** CHINCHILLA_SLOPE


def parse_dtype(text: str) -> str:
    key = str(text).strip().lower()
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPE_BYTES:
        raise LmatlasError(f"--dtype must be one of {', '.join(DTYPE_BYTES)} (or fp32, bf16, fp16), not {text!r}")
    return key


@dataclass
class Estimate:
    name: str
    source: str  # "preset", "catalogue" or "folder"
    preset: str | None
    dtype: str
    batch: int
    seq: int
    params: int
    params_exact: bool  # counted from weight files (a folder), not from the shape
    published_params: int | None
    embedding_params: int | None
    flops_per_token: float
    flops_per_token_matmul: float
    flops_per_token_attention: float
    train_tokens: float
    train_tokens_source: str  # "--tokens", "catalogue" or "compute-optimal"
    train_flops: float
    chinchilla_tokens: float
    weights_bytes: dict[str, float]
    kv_cache_bytes_per_token: float | None
    inference_bytes: float
    inference_breakdown: dict[str, float]
    training_bytes: float | None
    training_breakdown: dict[str, float] | None
    bandwidth_bytes_per_s: float | None  # None: no bandwidth given, so no decode bound
    bandwidth_source: str | None  # where the caller's figure came from ("measured", "--bandwidth")
    decode_tokens_per_s_bound: float | None
    notes: list[str] = field(default_factory=list)
    active_params: int | None = None  # per token, for a mixture of experts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(
    target: str,
    *,
    dtype: str = "bfloat16",
    batch: int | str = 1,
    seq: int | str | None = None,
    tokens: float | str | None = None,
    bandwidth: float | None = None,
    bandwidth_source: str = "given",
) -> Estimate:
    """The numbers for a catalogue name, an architecture preset or a checkpoint folder.

    ``dtype`` sets the bytes of weights, KV cache and activations; ``batch`` × ``seq`` the
    inference and training working set; ``tokens`` the training tokens of ``train_flops``
    (default: the catalogue's figure, else the compute-optimal one). ``bandwidth`` is the memory
    bandwidth in bytes per second that bounds decoding (``bandwidth_source`` says where it came
    from); without it there is no decode bound. Nothing here is measured or timed.
    """
    dtype = parse_dtype(dtype)
    batch = _positive_int(batch, "--batch")
    if bandwidth is not None and not (math.isfinite(bandwidth) and bandwidth > 0):
        raise LmatlasError(f"bandwidth must be a positive number of bytes per second, not {bandwidth!r}")
    t = resolve(str(target))
    notes = list(t.notes)
    seq = _sequence_length(t, seq, notes)
    if t.shape is None:
        matmul_flops, attention_flops = 2.0 * t.params, 0.0
    else:
        matmul_flops, attention_flops = forward_flops(t.shape, seq)
        if t.shape.skeleton == "encoder-decoder":
            notes.append("encoder-decoder FLOPs average an encoder and a decoder token (source as long as target)")
    train_tokens, tokens_source = _training_tokens(t, tokens)
    weights_bytes = {d: t.params * b for d, b in DTYPE_BYTES.items()}
    kv_per_token = _kv_cache_per_token(t, dtype, notes)
    infer = _inference_memory(t, dtype, batch, seq, kv_per_token)
    training = _training_memory(t, dtype, batch, seq, notes)
    decode_bound = _decode_bound(t, weights_bytes[dtype], kv_per_token, batch, seq, bandwidth, notes)
    if t.shape is not None and t.shape.notes:
        notes.append(t.shape.notes)
    counts = count_params(t.shape) if t.shape is not None else None
    active = counts.active if counts is not None and counts.idle else None
    return Estimate(
        name=t.name,
        source=t.source,
        preset=t.shape.name if (t.shape is not None and t.source != "folder") else None,
        dtype=dtype,
        batch=batch,
        seq=seq,
        params=int(t.params),
        params_exact=t.params_exact,
        published_params=t.published_params,
        embedding_params=count_params(t.shape).embeddings if t.shape is not None else None,
        active_params=active,
        flops_per_token=matmul_flops + attention_flops,
        flops_per_token_matmul=matmul_flops,
        flops_per_token_attention=attention_flops,
        train_tokens=train_tokens,
        train_tokens_source=tokens_source,
        # A mixture of experts trains, per token, only the parameters the token uses.
        train_flops=6.0 * (active or t.params) * train_tokens,
        chinchilla_tokens=chinchilla_tokens(t.params),
        weights_bytes=weights_bytes,
        kv_cache_bytes_per_token=kv_per_token,
        inference_bytes=sum(infer.values()),
        inference_breakdown=infer,
        training_bytes=sum(training.values()) if training is not None else None,
        training_breakdown=training,
        bandwidth_bytes_per_s=bandwidth,
        bandwidth_source=bandwidth_source if bandwidth is not None else None,
        decode_tokens_per_s_bound=decode_bound,
        notes=notes,
    )


def _positive_int(value: Any, what: str) -> int:
    try:
        number = parse_quantity(value, what)
    except LmatlasError:
        raise LmatlasError(f"{what} must be a positive whole number, not {value!r}") from None
    if number < 1 or number != int(number):
        raise LmatlasError(f"{what} must be a positive whole number, not {value!r}")
    return int(number)


def _sequence_length(t: Target, seq: int | str | None, notes: list[str]) -> int:
    """The tokens per sequence: as given, else the model's context (2048 without a shape)."""
    cfg = t.shape.config if t.shape is not None else None
    if seq is None:
        seq = (cfg.usable_positions or cfg.max_positions) if cfg is not None else 2048
        if cfg is not None and cfg.positions_from_padding:
            seq -= (cfg.pad_token_id or 1) + 1
    seq = _positive_int(seq, "--seq")
    if cfg is not None and cfg.usable_positions and seq > cfg.usable_positions:
        notes.append(f"--seq {seq} is longer than the model's {cfg.usable_positions} positions")
    return seq


def _training_tokens(t: Target, tokens: float | str | None) -> tuple[float, str]:
    """(training tokens, where the figure comes from) for the 6ND training FLOPs."""
    if tokens is not None:
        value = parse_quantity(tokens, "--tokens")
        if value <= 0:
            raise LmatlasError(f"--tokens must be positive, not {tokens!r}")
        return value, "--tokens"
    m = t.model
    # The catalogue's figure belongs to the catalogue's size, not to another preset of its family.
    if m is not None and m.training_tokens and (
        t.shape is None or (m.lmatlas and m.lmatlas.architectures[:1] == (t.shape.name,))
    ):
        return float(m.training_tokens), "catalogue"
    return chinchilla_tokens(t.params), "compute-optimal"


def _decodes(t: Target) -> bool:
    return t.shape is not None and t.shape.skeleton != "encoder"


def _kv_cache_per_token(t: Target, dtype: str, notes: list[str]) -> float | None:
    """Bytes of keys and values one token adds to the cache, over every decoding layer."""
    if t.shape is None:
        return None
    if not _decodes(t):
        notes.append("an encoder does not generate, so it keeps no KV cache")
        return None
    cfg = t.shape.config
    if cfg.memory_length is not None:
        notes.append(f"Transformer-XL keeps a memory instead of keys and values: one hidden state per layer and "
                     f"token, of the last {cfg.memory_length} tokens at most")
        return cfg.num_layers * cfg.hidden_size * DTYPE_BYTES[dtype]
    return 2 * t.shape.num_decoder_layers * cfg.num_kv_heads * cfg.head_dim * DTYPE_BYTES[dtype]


def _inference_memory(t: Target, dtype: str, batch: int, seq: int, kv_per_token: float | None) -> dict[str, float]:
    """The weights, the cache for batch × seq tokens, and one layer's activations during the
    prompt pass (the widest point: residual, normalised input, q/k/v, MLP)."""
    infer = {"weights": t.params * DTYPE_BYTES[dtype]}
    if kv_per_token is not None:
        infer["kv_cache"] = kv_per_token * batch * seq
    if t.shape is not None:
        cfg = t.shape.config
        # Activations stay in a float type when the weights are quantised.
        act_width = DTYPE_BYTES[dtype] if dtype in _FLOAT_DTYPES else 2
        q_kv = (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
        mlp = cfg.intermediate_size * (2 if cfg.gated_mlp else 1)
        infer["activations"] = batch * seq * (2 * cfg.hidden_size + q_kv + mlp) * act_width
        if _decodes(t):
            infer["logits"] = batch * cfg.vocab_size * 4  # float32 logits of the last position
    return infer


def _training_memory(t: Target, dtype: str, batch: int, seq: int, notes: list[str]) -> dict[str, float] | None:
    """Training with AdamW in mixed precision (float32 master weights): 16 bytes a parameter
    either way. Activations kept for the backward pass follow Korthikanti et al. (2022):
    s·b·h·(34 + 5·a·s/h) bytes per layer in 16-bit, without recomputation."""
    if dtype not in _FLOAT_DTYPES:
        notes.append(f"no training memory for {dtype}: training keeps float weights")
        return None
    width = DTYPE_BYTES[dtype]
    training = {
        "weights": t.params * width,
        "gradients": t.params * width,
        "optimizer": t.params * (8 if dtype == "float32" else 12),
    }
    if t.shape is not None:
        cfg = t.shape.config
        layers = cfg.num_layers
        if t.shape.skeleton == "encoder-decoder":
            layers += t.shape.num_decoder_layers
        per_layer = seq * batch * cfg.hidden_size * (34 + 5 * cfg.num_heads * seq / cfg.hidden_size)
        training["activations"] = layers * per_layer * (width / 2)
        training["logits"] = batch * seq * cfg.vocab_size * 4 * (2 if _decodes(t) else 1)
    return training


def _decode_bound(
    t: Target, weights: float, kv_per_token: float | None, batch: int, seq: int, bandwidth: float | None, notes: list[str]
) -> float | None:
    """Tokens per second at most: each step reads every weight once and each sequence's cache,
    and yields ``batch`` tokens."""
    if bandwidth is None:
        return None
    if kv_per_token is not None:
        return batch * bandwidth / (weights + kv_per_token * batch * seq)
    if t.shape is None and t.model is not None and t.model.architecture in ("decoder", "encoder-decoder"):
        notes.append("decode bound from the weights alone (no shape for the KV cache)")
        return batch * bandwidth / weights
    return None
