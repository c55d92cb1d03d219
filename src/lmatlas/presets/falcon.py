"""Falcon (TII, 2023): multi-query attention, rotary positions and parallel attention + MLP.

Three layouts: Falcon-7B (one key/value head, attention and MLP in parallel over one norm),
Falcon-40B's "new decoder architecture" (grouped key/value heads, a norm for each branch), and
the sequential pre-norm layout with full heads and ALiBi of Falcon-RW.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import LmatlasError
from ._maps import DECODER_HEADS, WeightMap, decoder_common, grouped_qkv, linear, lm_head, norm

MODEL_TYPES = ("falcon",)
PREFIX = "transformer"
HEADS = DECODER_HEADS


def _layout(hf: dict) -> tuple[str, int]:
    """(norm_position, parallel_norms) as transformers' FalconDecoderLayer reads the flags."""
    new = hf.get("new_decoder_architecture", False)
    parallel = hf.get("parallel_attn", True)
    n_ln = hf.get("num_ln_in_parallel_attn")
    if new:
        if not parallel:
            raise LmatlasError("Falcon's new decoder architecture with parallel_attn false is not supported")
        return "parallel", 2 if n_ln in (None, 2) else 1
    return ("parallel", 1) if parallel else ("pre", 1)


def _kv_heads(hf: dict) -> int:
    heads = hf.get("num_attention_heads", 71)
    if hf.get("new_decoder_architecture", False):
        return hf.get("num_kv_heads") or heads
    return 1 if hf.get("multi_query", True) else heads


def config(hf: dict, head: str) -> ModelConfig:
    d = hf.get("hidden_size", 4544)
    position, n_norms = _layout(hf)
    alibi = bool(hf.get("alibi", False))
    bias = bool(hf.get("bias", False))
    return ModelConfig(
        model_type="falcon",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        num_layers=hf.get("num_hidden_layers", 32),
        num_heads=hf.get("num_attention_heads", 71),
        num_kv_heads=_kv_heads(hf),
        intermediate_size=hf.get("ffn_hidden_size") or 4 * d,
        activation=hf.get("activation", "gelu"),
        max_positions=hf.get("max_position_embeddings", 2048),
        position_embedding="alibi" if alibi else "rotary",
        alibi_before_scale=True,
        rotary_base=hf.get("rope_theta", 10000.0),
        rope_scaling=hf.get("rope_scaling"),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        norm_position=position,
        parallel_norms=n_norms,
        attention_bias=bias,
        mlp_bias=bias,
        hidden_dropout=hf.get("hidden_dropout", 0.0),
        attention_dropout=hf.get("attention_dropout", 0.0),
        **decoder_common(hf),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    hf = cfg.hf_config
    bias = cfg.attention_bias
    backbone: WeightMap = {"backbone.embeddings.tokens.weight": "word_embeddings.weight"}
    for i in range(cfg.num_layers):
        ours, theirs = f"backbone.layers.{i}", f"h.{i}"
        att = f"{theirs}.self_attention"
        if hf.get("new_decoder_architecture", False) or not hf.get("multi_query", True):
            # Per key/value group: its query heads, then its key and value heads.
            backbone |= grouped_qkv(
                f"{ours}.attn.qkv", f"{att}.query_key_value", cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, bias
            )
        else:  # Falcon-7B's multi-query layout is already [all queries; key; value]
            backbone |= linear(f"{ours}.attn.qkv", f"{att}.query_key_value", bias=bias)
        backbone |= linear(f"{ours}.attn.out", f"{att}.dense", bias=bias)
        backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.mlp.dense_h_to_4h", bias=bias)
        backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.mlp.dense_4h_to_h", bias=bias)
        if cfg.norm_position == "parallel" and cfg.parallel_norms == 2:
            backbone |= norm(f"{ours}.attn_norm", f"{theirs}.ln_attn")
            backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.ln_mlp")
        else:
            backbone |= norm(f"{ours}.attn_norm", f"{theirs}.input_layernorm")
            if cfg.norm_position == "pre":
                backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.post_attention_layernorm")
    backbone |= norm("backbone.final_norm", "ln_f")
    return backbone, lm_head(head)
