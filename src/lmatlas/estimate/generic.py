"""The shape of a model whose family has no lmatlas preset, for FLOPs and memory estimates only.

A folder of a supported family is read by its preset. Any other ``config.json`` is read here,
from the names families commonly give width, depth and heads (``n_embd``, ``d_model``…), and
from the keys that announce rotary, ALiBi or relative positions. Decoding left to right is what
its ``architectures`` say (``…ForCausalLM``, ``…LMHeadModel``). This never builds a model.
"""

from __future__ import annotations

from typing import Any

from ..catalog import ArchitecturePreset
from ..config import ModelConfig
from ..errors import LmatlasError
from .counting import shape_of

# Families whose config.json does not say their MLP is gated (SwiGLU, GeGLU).
_GATED_TYPES = ("mistral", "mixtral", "qwen2", "gemma")
_ROTARY_KEYS = ("rope_theta", "rotary_dim", "rotary_pct", "rotary_emb_base", "partial_rotary_factor")


def _first(hf: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if hf.get(k) is not None:
            return hf[k]
    return default


def _positions(hf: dict) -> str:
    if "relative_attention_num_buckets" in hf:
        return "relative"
    if hf.get("alibi"):
        return "alibi"
    if any(k in hf for k in _ROTARY_KEYS):
        return "rotary"
    return "learned"


def generic_shape(hf: dict, source: str, name: str = "model") -> ArchitecturePreset:
    """The shape numbers of any family's ``config.json`` (``source`` names it in errors)."""
    model_type = str(hf.get("model_type") or "unknown")
    hidden = _first(hf, "hidden_size", "n_embd", "d_model", "dim", "model_dim")
    layers = _first(hf, "num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers")
    heads = _first(hf, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "n_heads")
    if not all(isinstance(x, int) and x > 0 for x in (hidden, layers, heads)):
        raise LmatlasError(f"{source}: cannot read the model's width, depth and heads")
    enc_dec = bool(hf.get("is_encoder_decoder"))
    architectures = hf.get("architectures") or []
    causal = not enc_dec and (
        bool(hf.get("is_decoder")) or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    )
    act = str(_first(hf, "hidden_act", "activation_function", "feed_forward_proj", default="gelu"))
    inter = _first(
        hf, "intermediate_size", "n_inner", "d_ff", "ffn_dim", "encoder_ffn_dim", "ffn_hidden_size", "dim_feedforward"
    )
    positions = _first(hf, "max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", default=2048)
    try:
        cfg = ModelConfig(
            model_type=model_type,
            vocab_size=int(_first(hf, "vocab_size", default=0)),
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=_first(hf, "num_key_value_heads", "num_kv_heads", "n_head_kv"),
            head_dim=_first(hf, "head_dim", "d_kv"),
            intermediate_size=int(inter or 4 * hidden),
            max_positions=int(positions),
            position_embedding=_positions(hf),
            gated_mlp=model_type in _GATED_TYPES or act.startswith("gated"),
            causal=causal,
            norm_position="parallel" if hf.get("parallel_attn") else "pre",
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
            is_encoder_decoder=enc_dec,
            decoder_layers=_first(hf, "num_decoder_layers", "decoder_layers") if enc_dec else None,
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        )
    except (TypeError, ValueError) as e:
        raise LmatlasError(f"{source}: {e}") from None
    return shape_of(cfg, name, source)
