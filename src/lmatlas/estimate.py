"""The numbers to know before running anything: parameters, FLOPs, memory, KV cache, speed.

Everything here is arithmetic on a model's shape (an architecture preset, a catalogue entry or
a checkpoint folder's ``config.json``), except two things that are measured: the exact
parameter count of a folder, read from its weight files' headers, and this machine's memory
bandwidth, read from a timed pass over a large tensor.

Conventions, so that the figures compare with the papers':

- FLOPs count a multiply-add as two. A forward pass costs 2 FLOPs per weight that a token
  multiplies by (attention, MLP and the vocabulary projection; embedding lookups are free) plus
  4 · q_dim FLOPs per attended position and layer (scores and the weighted sum of values), the
  convention of Hoffmann et al. (2022, appendix F) without the small softmax term.
- Training costs 6 · N · D FLOPs for N parameters and D tokens (forward 2, backward 4).
- Memory is in bytes; the text output uses binary units (GiB).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .catalog import (
    ArchitecturePreset,
    Model,
    architecture_names,
    architecture_preset,
    format_count,
    lookup,
    models,
    parse_quantity,
)
from .catalog import architecture_key as _find_architecture_key, suggest as _suggest
from .checkpoint import weight_files
from .config import ModelConfig
from .errors import LmatlasError

# Bytes per parameter (and per cached key/value element) for each dtype people deploy in.
DTYPE_BYTES: dict[str, float] = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1, "int4": 0.5}
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


# --------------------------------------------------------------------------------------------
# Counting parameters from a shape
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamCount:
    """Parameters by part, and the weights one token multiplies by (for FLOPs)."""

    total: int
    embeddings: int  # lookup tables: tokens, positions, token types, relative-position biases
    encoder: int  # the encoder stack (0 for a decoder)
    decoder: int  # the decoder stack (0 for an encoder)
    head: int  # pooler, untied vocabulary projection and its bias
    matmul_encoder: int  # weights an encoder token multiplies by
    matmul_decoder: int  # weights a decoder token multiplies by, the vocabulary projection included


def _norm(cfg: ModelConfig, dim: int) -> int:
    if not getattr(cfg, "norm_affine", True):
        return 0
    return dim if cfg.norm == "rmsnorm" else 2 * dim


def _attention(cfg: ModelConfig, extra: dict, self_attention: bool = True) -> tuple[int, int]:
    """(parameters, matmul weights) of one attention block."""
    h = cfg.hidden_size
    q = cfg.num_heads * cfg.head_dim
    kv = cfg.num_kv_heads * cfg.head_dim
    weights = h * q + 2 * h * kv + q * h
    qkv_bias = getattr(cfg, "qkv_bias", None)
    qkv_bias = cfg.attention_bias if qkv_bias is None else qkv_bias
    biases = (q + 2 * kv if qkv_bias else 0) + (h if cfg.attention_bias else 0)
    if self_attention and cfg.position_embedding == "relative" and extra.get("relative_attention") == "transformer-xl":
        # Transformer-XL: a key projection for the relative position encodings, and the two
        # learned bias vectors (content and position) of its attention score.
        weights += h * q
        biases += 2 * q
    return weights + biases, weights


def _mlp(cfg: ModelConfig) -> tuple[int, int]:
    h, i = cfg.hidden_size, cfg.intermediate_size
    n_in = 2 if cfg.gated_mlp else 1
    weights = n_in * h * i + i * h
    biases = n_in * i + h if cfg.mlp_bias else 0
    return weights + biases, weights


def _layer(cfg: ModelConfig, extra: dict, cross_attention: bool = False) -> tuple[int, int]:
    attn, attn_mm = _attention(cfg, extra)
    mlp, mlp_mm = _mlp(cfg)
    norms = getattr(cfg, "parallel_norms", 1) if cfg.norm_position == "parallel" else 2
    params = attn + mlp + norms * _norm(cfg, cfg.hidden_size)
    matmul = attn_mm + mlp_mm
    if cross_attention:
        cross, cross_mm = _attention(cfg, extra, self_attention=False)
        params += cross + _norm(cfg, cfg.hidden_size)
        matmul += cross_mm
    return params, matmul


def _positions(cfg: ModelConfig, extra: dict, width: int) -> int:
    pe = cfg.position_embedding
    if pe == "learned":
        return cfg.max_positions * width
    if pe == "sinusoidal":
        # A frozen table when the checkpoint stores it (it is then a parameter, as in
        # transformers); nothing when it is computed.
        return cfg.max_positions * width if getattr(cfg, "positions_stored", False) else 0
    if pe == "relative" and extra.get("relative_attention", "buckets") == "buckets":
        # T5 and LaMDA: one learned bias per distance bucket and head, held by the first layer.
        return extra.get("relative_attention_num_buckets", 32) * cfg.num_heads
    return 0


def count_params(shape: ArchitecturePreset | ModelConfig, extra: dict | None = None) -> ParamCount:
    """Parameters of a model from its shape alone, as transformers would count them.

    Tied weights count once; buffers (causal masks, rotary frequencies) are not parameters.
    """
    if isinstance(shape, ArchitecturePreset):
        cfg, extra = shape.config, shape.extra
    else:
        cfg = shape
        extra = dict(extra or {})
        extra.setdefault("skeleton", "decoder" if cfg.causal else "encoder")
    skeleton = extra.get("skeleton") or ("decoder" if cfg.causal else "encoder")
    h, e, v = cfg.hidden_size, cfg.embedding_size, cfg.vocab_size

    tokens = v * e
    types = cfg.type_vocab_size * e
    emb_norm = _norm(cfg, e) if cfg.embedding_norm else 0
    project_in = 0
    if cfg.embedding_projection:
        project_in = e * h + (h if getattr(cfg, "embedding_projection_bias", True) else 0)
    final_norm = _norm(cfg, h) if cfg.final_norm else 0
    layer, layer_mm = _layer(cfg, extra)

    if skeleton == "encoder":
        groups, inner = cfg.num_layer_groups, cfg.inner_group_size
        shared = groups > 1 or inner > 1 or cfg.model_type == "albert"
        blocks = groups * inner if shared else cfg.num_layers
        steps = cfg.num_layers * inner if shared else cfg.num_layers
        pooler = h * h + h if cfg.pooler_activation else 0
        embeddings = tokens + _positions(cfg, extra, e) + types
        encoder = emb_norm + project_in + blocks * layer + final_norm
        total = embeddings + encoder + pooler
        mm = (e * h if cfg.embedding_projection else 0) + steps * layer_mm
        return ParamCount(total, embeddings, encoder, 0, pooler, mm, 0)

    # The vocabulary projection reads the hidden state, or its projection back to the
    # embedding width (OPT-350m).
    out_width = e if getattr(cfg, "output_projection", False) else h
    project_out = h * e if getattr(cfg, "output_projection", False) else 0
    head = (0 if cfg.tie_word_embeddings else v * out_width) + (v if cfg.lm_head_bias else 0)
    logits_mm = v * out_width

    if skeleton == "decoder":
        embeddings = tokens + _positions(cfg, extra, e) + types
        decoder = emb_norm + project_in + cfg.num_layers * layer + final_norm + project_out
        total = embeddings + decoder + head
        mm = (e * h if cfg.embedding_projection else 0) + cfg.num_layers * layer_mm + project_out + logits_mm
        return ParamCount(total, embeddings, 0, decoder, head, 0, mm)

    # Encoder-decoder: one token table shared by both stacks and (when tied) the output.
    n_dec = extra.get("num_decoder_layers") or cfg.num_layers
    dec_layer, dec_layer_mm = _layer(cfg, extra, cross_attention=True)
    positions = _positions(cfg, extra, e)
    embeddings = tokens + 2 * positions
    encoder = emb_norm + cfg.num_layers * layer + final_norm
    decoder = emb_norm + n_dec * dec_layer + final_norm
    total = embeddings + encoder + decoder + head
    return ParamCount(total, embeddings, encoder, decoder, head, cfg.num_layers * layer_mm, n_dec * dec_layer_mm + logits_mm)


# --------------------------------------------------------------------------------------------
# Counting parameters in a checkpoint folder
# --------------------------------------------------------------------------------------------

# Buffers that some checkpoints store but that are not parameters: position-id ranges, rotary
# frequencies, fairseq's placeholder, BART's final_logits_bias. GPT-2's causal mask
# ("attn.bias", 4-D) is recognised by its shape.
_BUFFER_SUFFIXES = (
    ".position_ids", ".token_type_ids", ".inv_freq", "._float_tensor", ".masked_bias", "final_logits_bias",
)
# Output projections that are tied to the input embeddings (dropped only when the config ties
# them and an input table of the same shape is present).
_OUTPUT_SUFFIXES = (
    "lm_head.weight", "cls.predictions.decoder.weight", "predictions.decoder.weight",
    "lm_head.decoder.weight", "generator_lm_head.weight", "vocab_projector.weight",
)
_INPUT_SUFFIXES = (
    "word_embeddings.weight", "wte.weight", "embed_tokens.weight", "shared.weight",
    "tokens_embed.weight", "embed_in.weight", "transformer.w.weight",
)


def _tensor_shapes(file: Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    """name -> (shape, identity) without reading the data (safetensors) or by memory map (.bin).

    The identity is the same for two names that share storage in a ``.bin`` file (tied weights
    saved by ``torch.save``), and unique otherwise.
    """
    shapes: dict[str, tuple[tuple[int, ...], Any]] = {}
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    shapes[name] = (tuple(f.get_slice(name).get_shape()), (file, name))
        except (SafetensorError, OSError) as e:
            raise LmatlasError(f"{file}: not a readable safetensors file ({e})") from None
        return shapes
    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # pickle, zip and unpickler errors have no common base
        raise LmatlasError(f"{file}: not a readable PyTorch weights file ({e})") from None
    if not isinstance(state, dict):
        raise LmatlasError(f"{file}: expected a dict of tensors, found {type(state).__name__}")
    for name, t in state.items():
        if isinstance(t, torch.Tensor):
            ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
            shapes[name] = (tuple(t.shape), ident)
    return shapes


def folder_params(folder: str | os.PathLike) -> int:
    """The exact number of parameters of the model saved in ``folder``, as transformers'
    ``model.num_parameters()`` counts them, read from the weight files' headers.

    A file count differs from the model's in three ways, each handled here: ``save_pretrained``
    leaves out weights tied to the input embeddings (nothing to do), older files keep the tied
    copy or share it by storage (counted once), and some files keep buffers that are not
    parameters (causal masks, position ids, BART's final_logits_bias: not counted).
    """
    folder = Path(folder)
    hf = _read_config(folder)
    shapes: dict[str, tuple[tuple[int, ...], Any]] = {}
    for file in weight_files(folder):
        shapes.update(_tensor_shapes(file))
    tied = bool(hf.get("tie_word_embeddings", True))
    if hf.get("model_type") == "t5" and "scale_decoder_outputs" in hf:
        # transformers 5 writes T5's tie_word_embeddings always true, and keeps a stored lm_head
        # untied unless it equals the token table (not told by the headers: counted as untied).
        tied = False
    skip: set[str] = set()
    for name, (shape, _) in shapes.items():
        if name.endswith(_BUFFER_SUFFIXES) or (name.endswith(".attn.bias") and len(shape) == 4):
            skip.add(name)
    inputs = {shape for n, (shape, _) in shapes.items() if n.endswith(_INPUT_SUFFIXES)}
    names = set(shapes)
    for name, (shape, _) in shapes.items():
        if tied and name.endswith(_OUTPUT_SUFFIXES) and shape in inputs:
            skip.add(name)
        # Encoder-decoders: both stacks' token tables are the shared one.
        if name.endswith(("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")):
            prefix = name.rsplit("encoder.embed_tokens.weight", 1)[0] if "encoder." in name else name.rsplit("decoder.embed_tokens.weight", 1)[0]
            if prefix + "shared.weight" in names:
                skip.add(name)
        # Masked-LM heads: the decoder's bias is the head's own bias (BERT, RoBERTa).
        if name.endswith(".decoder.bias") and name[: -len("decoder.bias")] + "bias" in names:
            skip.add(name)
    seen: set[Any] = set()
    total = 0
    for name, (shape, ident) in shapes.items():
        if name in skip or ident in seen:
            continue
        seen.add(ident)
        total += math.prod(shape)
    return total


def _read_config(folder: Path) -> dict:
    file = folder / "config.json"
    if not file.exists():
        raise LmatlasError(f"{folder}: no config.json, so this is not a model folder")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise LmatlasError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise LmatlasError(f"{file}: expected a JSON object")
    return data


def _first(hf: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if hf.get(k) is not None:
            return hf[k]
    return default


def _tied_head(hf: dict) -> bool:
    """Whether config.json means a head tied to the token table. transformers 5 writes T5's
    tie_word_embeddings always true, and scale_decoder_outputs false where version 4 wrote
    tie_word_embeddings false (T5 v1.1 and Flan-T5, whose checkpoints store their own head)."""
    if hf.get("model_type") == "t5" and hf.get("scale_decoder_outputs") is not None:
        return bool(hf["scale_decoder_outputs"])
    return bool(hf.get("tie_word_embeddings", True))


# config.json model types that decode left to right (besides *ForCausalLM architectures).
_DECODER_TYPES = {
    "gpt2", "openai-gpt", "gpt_neo", "gpt_neox", "gptj", "ctrl", "opt", "bloom", "falcon", "llama",
    "mistral", "mixtral", "qwen2", "phi", "gemma", "transfo-xl", "codegen", "gpt_bigcode",
}


def shape_from_config(hf: dict, name: str = "model") -> ArchitecturePreset:
    """The shape numbers of a ``config.json`` of any family, for FLOPs and memory estimates.

    This reads the keys families use for the same things (``n_embd``, ``d_model``…); it is not
    a preset, and is never used to build a model.
    """
    model_type = str(hf.get("model_type", ""))
    hidden = _first(hf, "hidden_size", "n_embd", "d_model", "dim", "model_dim")
    layers = _first(hf, "num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers")
    heads = _first(hf, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "n_heads")
    if not all(isinstance(x, int) and x > 0 for x in (hidden, layers, heads)):
        raise LmatlasError(f"{name}/config.json: cannot read the model's width, depth and heads")
    kv = _first(hf, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    if model_type == "falcon" and not hf.get("new_decoder_architecture") and hf.get("multi_query", True):
        kv = 1
    head_dim = _first(hf, "head_dim", "d_kv")
    inter = _first(hf, "intermediate_size", "n_inner", "d_ff", "ffn_dim", "encoder_ffn_dim", "ffn_hidden_size", "dim_feedforward")
    arch_names = hf.get("architectures") or []
    enc_dec = bool(hf.get("is_encoder_decoder"))
    causal = not enc_dec and (
        model_type in _DECODER_TYPES or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in arch_names)
    )
    act = str(_first(hf, "hidden_act", "activation_function", "feed_forward_proj", default="gelu"))
    gated = model_type in ("llama", "mistral", "mixtral", "qwen2", "gemma") or act.startswith("gated")
    pos = "learned"
    if model_type in ("t5", "mt5", "longt5"):
        pos = "relative"
    elif hf.get("alibi") or model_type == "bloom":
        pos = "alibi"
    elif model_type in ("llama", "mistral", "qwen2", "gpt_neox", "falcon", "gptj", "gemma", "phi"):
        pos = "rotary"
    try:
        cfg = ModelConfig(
            model_type=model_type or "unknown",
            vocab_size=int(_first(hf, "vocab_size", default=0)),
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            intermediate_size=int(inter or 4 * hidden),
            max_positions=int(_first(hf, "max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", default=2048)),
            position_embedding=pos,
            gated_mlp=gated,
            causal=causal,
            norm_position="parallel" if hf.get("parallel_attn") else "pre",
            tie_word_embeddings=_tied_head(hf),
        )
    except (TypeError, ValueError) as e:
        raise LmatlasError(f"{name}/config.json: {e}") from None
    skeleton = "encoder-decoder" if enc_dec else ("decoder" if causal else "encoder")
    extra = {
        "skeleton": skeleton,
        "num_decoder_layers": _first(hf, "num_decoder_layers", "decoder_layers", default=layers) if enc_dec else None,
        "relative_attention": "buckets",
        "relative_attention_num_buckets": hf.get("relative_attention_num_buckets", 32),
    }
    return ArchitecturePreset(name=name, model=None, config=cfg, extra=extra, source=f"{name}/config.json")


# --------------------------------------------------------------------------------------------
# Memory bandwidth
# --------------------------------------------------------------------------------------------


@functools.cache
def measure_bandwidth() -> float:
    """Bytes per second this machine reads from memory: the best of a few sums over 128 MiB.

    About 0.1-0.2 s, once per process. A decoder reads every weight once per generated token,
    so this bounds how fast it can decode.
    """
    import torch

    x = torch.ones(32 * 2**20, dtype=torch.float32)  # 128 MiB, written once so pages are real
    best = math.inf
    for _ in range(6):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * x.element_size() / best


def parse_bandwidth(text: str | float) -> float:
    """"25" or "25GB/s" -> 25e9 bytes/s; also MB/s, GiB/s, TB/s."""
    if isinstance(text, (int, float)):
        value = float(text) * 1e9
    else:
        s = str(text).strip().lower().replace(" ", "")
        units = {"tb/s": 1e12, "gb/s": 1e9, "mb/s": 1e6, "tib/s": 2**40, "gib/s": 2**30, "mib/s": 2**20}
        scale = 1e9
        for unit, factor in units.items():
            if s.endswith(unit):
                s, scale = s[: -len(unit)], factor
                break
        try:
            value = float(s) * scale
        except ValueError:
            raise LmatlasError(f"--bandwidth must be a number of GB/s such as 25 or 25GB/s, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise LmatlasError(f"--bandwidth must be positive, not {text!r}")
    return value


# --------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------


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
    bandwidth_bytes_per_s: float
    bandwidth_source: str  # "measured" or "--bandwidth"
    decode_tokens_per_s_bound: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolve(target: str) -> tuple[str, ArchitecturePreset | None, Model | None, Path | None]:
    """(kind, shape, catalogue entry, folder) for a folder, catalogue name or preset name."""
    path = Path(target).expanduser()
    if path.is_dir():
        return "folder", None, None, path
    if path.exists():
        raise LmatlasError(f"{target}: not a folder; give the model's folder (with config.json), not a file")
    if os.sep in target or "/" in target or target.startswith((".", "~")):
        raise LmatlasError(f"{target}: no such folder (estimate reads local checkpoint folders; it does not download)")
    # A name as the catalogue writes it ("GPT-2") is the catalogue's model; a preset's key
    # ("gpt2") is that size; anything else is looked up loosely in the catalogue ("gpt 3").
    exact = [m for m in models() if target in m.names]
    key = _find_architecture_key(target)
    if exact:
        model = exact[0]
    elif key is not None:
        return "preset", architecture_preset(key), None, None
    else:
        model = lookup(target)
    if model is None:
        names = [n for m in models() for n in m.names] + architecture_names()
        hint = _suggest(target, names)
        raise LmatlasError(
            f"no model or preset called {target!r}"
            + (f"; did you mean {hint}?" if hint else "; `lmatlas catalog` lists the models")
        )
    arch = model.lmatlas.architectures if model.lmatlas else ()
    return "catalogue", architecture_preset(arch[0]) if arch else None, model, None


def _positive_int(value: Any, what: str) -> int:
    try:
        number = parse_quantity(value, what)
    except LmatlasError:
        raise LmatlasError(f"{what} must be a positive whole number, not {value!r}") from None
    if number < 1 or number != int(number):
        raise LmatlasError(f"{what} must be a positive whole number, not {value!r}")
    return int(number)


def estimate(
    target: str,
    *,
    dtype: str = "bfloat16",
    batch: int | str = 1,
    seq: int | str | None = None,
    tokens: float | str | None = None,
    bandwidth: float | str | None = None,
) -> Estimate:
    """The numbers for a catalogue name, an architecture preset or a checkpoint folder.

    ``dtype`` sets the bytes of weights, KV cache and activations; ``batch`` × ``seq`` the
    inference and training working set; ``tokens`` the training tokens of ``train_flops``
    (default: the catalogue's figure, else the compute-optimal one); ``bandwidth`` in GB/s (or
    with a unit) replaces the measurement of this machine.
    """
    dtype = parse_dtype(dtype)
    batch = _positive_int(batch, "--batch")
    kind, shape, model, folder = _resolve(str(target))
    notes: list[str] = []
    params_exact = False
    published = None
    name = str(target)
    if kind == "folder":
        hf = _read_config(folder)
        shape = shape_from_config(hf, folder.name)
        params = folder_params(folder)
        params_exact = True
        name = folder.name
    elif shape is not None:
        params = count_params(shape).total
        published = model.params if model is not None else shape.published_params
        name = model.name if model is not None else shape.name
    else:
        if model.params is None:
            raise LmatlasError(f"{model.name}: the catalogue has no parameter count, so there is nothing to estimate")
        params = int(model.params)
        published = model.params
        name = model.name
        notes.append("no architecture preset: FLOPs are 2 per parameter, without attention; no KV cache figure")
        if "mixture-of-experts" in (model.architecture_note or ""):
            notes.append("a mixture-of-experts model: each token uses only some experts, so FLOPs are overstated")

    cfg = shape.config if shape is not None else None
    counts = count_params(shape) if shape is not None else None
    if seq is None:
        seq = (cfg.usable_positions or cfg.max_positions) if cfg is not None else 2048
        if cfg is not None and cfg.positions_from_padding:
            seq -= (cfg.pad_token_id or 1) + 1
    seq = _positive_int(seq, "--seq")
    if cfg is not None and cfg.usable_positions and seq > cfg.usable_positions:
        notes.append(f"--seq {seq} is longer than the model's {cfg.usable_positions} positions")

    # FLOPs per token of a forward pass.
    if counts is None:
        matmul_flops, attention_flops = 2.0 * params, 0.0
    else:
        q_dim = cfg.num_heads * cfg.head_dim
        skeleton = shape.extra["skeleton"]
        if skeleton == "encoder":
            steps = cfg.num_layers * (cfg.inner_group_size if cfg.model_type == "albert" else 1)
            matmul_flops = 2.0 * counts.matmul_encoder
            attention_flops = 4.0 * q_dim * seq * steps
        elif skeleton == "decoder":
            window = getattr(cfg, "local_attention_window", None)
            kinds = getattr(cfg, "attention_layers", None) or ["global"] * cfg.num_layers
            context = [min(seq, window) if k == "local" and window else seq for k in kinds]
            matmul_flops = 2.0 * counts.matmul_decoder
            attention_flops = 4.0 * q_dim * sum(context)
        else:
            # An encoder token and a decoder token, averaged: as many source as target tokens.
            n_dec = shape.extra["num_decoder_layers"]
            matmul_flops = (counts.matmul_encoder + counts.matmul_decoder) * 2.0 / 2
            attention_flops = (4.0 * q_dim * seq * cfg.num_layers + 8.0 * q_dim * seq * n_dec) / 2
            notes.append("encoder-decoder FLOPs average an encoder and a decoder token (source as long as target)")
    flops_per_token = matmul_flops + attention_flops

    chin = chinchilla_tokens(params)
    if tokens is not None:
        train_tokens, tokens_source = parse_quantity(tokens, "--tokens"), "--tokens"
        if train_tokens <= 0:
            raise LmatlasError(f"--tokens must be positive, not {tokens!r}")
    elif model is not None and model.training_tokens and (
        shape is None or (model.lmatlas and model.lmatlas.architectures[:1] == (shape.name,))
    ):
        train_tokens, tokens_source = float(model.training_tokens), "catalogue"
    else:
        train_tokens, tokens_source = chin, "compute-optimal"

    weights_bytes = {d: params * b for d, b in DTYPE_BYTES.items()}
    width = DTYPE_BYTES[dtype]
    # Activations stay in a float type when the weights are quantised.
    act_width = width if dtype in ("float32", "bfloat16", "float16") else 2

    decodes = shape is not None and shape.extra["skeleton"] != "encoder"
    kv_per_token = None
    if decodes:
        kv_per_token = 2 * shape.num_decoder_layers * cfg.num_kv_heads * cfg.head_dim * width
    elif shape is not None:
        notes.append("an encoder does not generate, so it keeps no KV cache")

    # Inference: the weights, the cache for batch x seq tokens, and one layer's activations
    # during the prompt pass (the widest point: residual, normalised input, q/k/v, MLP).
    infer = {"weights": weights_bytes[dtype]}
    if kv_per_token is not None:
        infer["kv_cache"] = kv_per_token * batch * seq
    if cfg is not None:
        q_kv = (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
        mlp = cfg.intermediate_size * (2 if cfg.gated_mlp else 1)
        infer["activations"] = batch * seq * (2 * cfg.hidden_size + q_kv + mlp) * act_width
        if decodes:
            infer["logits"] = batch * cfg.vocab_size * 4  # float32 logits of the last position
    inference_bytes = sum(infer.values())

    # Training with AdamW in mixed precision (float32 master weights): 16 bytes a parameter
    # either way. Activations kept for the backward pass follow Korthikanti et al. (2022):
    # s·b·h·(34 + 5·a·s/h) bytes per layer in 16-bit, without recomputation.
    training = None
    training_bytes = None
    if dtype in ("float32", "bfloat16", "float16"):
        training = {
            "weights": params * width,
            "gradients": params * width,
            "optimizer": params * (8 if dtype == "float32" else 12),
        }
        if cfg is not None:
            layers = cfg.num_layers
            if shape.extra["skeleton"] == "encoder-decoder":
                layers += shape.extra["num_decoder_layers"]
            per_layer = seq * batch * cfg.hidden_size * (34 + 5 * cfg.num_heads * seq / cfg.hidden_size)
            training["activations"] = layers * per_layer * (width / 2)
            training["logits"] = batch * seq * cfg.vocab_size * 4 * (2 if decodes else 1)
        training_bytes = sum(training.values())
    else:
        notes.append(f"no training memory for {dtype}: training keeps float weights")

    if bandwidth is None:
        bw, bw_source = measure_bandwidth(), "measured"
    else:
        bw, bw_source = parse_bandwidth(bandwidth), "--bandwidth"
    decode_bound = None
    if kv_per_token is not None:
        # Each step reads every weight once and each sequence's cache; it yields batch tokens.
        per_step = weights_bytes[dtype] + kv_per_token * batch * seq
        decode_bound = batch * bw / per_step
    elif shape is None and model is not None and model.architecture in ("decoder", "encoder-decoder"):
        decode_bound = batch * bw / weights_bytes[dtype]
        notes.append("decode bound from the weights alone (no shape for the KV cache)")

    if shape is not None and shape.notes:
        notes.append(shape.notes)
    return Estimate(
        name=name,
        source=kind,
        preset=shape.name if (shape is not None and kind != "folder") else None,
        dtype=dtype,
        batch=batch,
        seq=seq,
        params=int(params),
        params_exact=params_exact,
        published_params=published,
        embedding_params=counts.embeddings if counts is not None else None,
        flops_per_token=flops_per_token,
        flops_per_token_matmul=matmul_flops,
        flops_per_token_attention=attention_flops,
        train_tokens=train_tokens,
        train_tokens_source=tokens_source,
        train_flops=6.0 * params * train_tokens,
        chinchilla_tokens=chin,
        weights_bytes=weights_bytes,
        kv_cache_bytes_per_token=kv_per_token,
        inference_bytes=inference_bytes,
        inference_breakdown=infer,
        training_bytes=training_bytes,
        training_breakdown=training,
        bandwidth_bytes_per_s=bw,
        bandwidth_source=bw_source,
        decode_tokens_per_s_bound=decode_bound,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Units for people
# --------------------------------------------------------------------------------------------


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
    breakdown = ", ".join(f"{k} {format_bytes(v)}" for k, v in est.inference_breakdown.items())
    rows.append((
        f"inference memory ({est.dtype})",
        f"{format_bytes(est.inference_bytes)} at batch {est.batch} x seq {est.seq}  ({breakdown})",
    ))
    if est.training_bytes is not None:
        breakdown = ", ".join(f"{k} {format_bytes(v)}" for k, v in est.training_breakdown.items())
        rows.append(("training memory (AdamW)", f"{format_bytes(est.training_bytes)}  ({breakdown})"))
    else:
        rows.append(("training memory (AdamW)", "-"))
    bw = f"{_num(est.bandwidth_bytes_per_s / 1e9)} GB/s ({est.bandwidth_source})"
    if est.decode_tokens_per_s_bound is None:
        rows.append(("decode bound", f"-  (memory bandwidth {bw})"))
    else:
        rows.append(("decode bound", f"{_num(est.decode_tokens_per_s_bound)} tokens/s at {bw}, batch {est.batch}"))
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines)


__all__ = [
    "CHINCHILLA_SLOPE",
    "DTYPE_BYTES",
    "Estimate",
    "ParamCount",
    "chinchilla_tokens",
    "count_params",
    "estimate",
    "folder_params",
    "format_bytes",
    "format_estimate",
    "format_flops",
    "measure_bandwidth",
    "parse_bandwidth",
    "parse_dtype",
    "shape_from_config",
]
