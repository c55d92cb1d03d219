"""Llama (Touvron et al., 2023), the open base model behind Alpaca and most chat models since.

Pre-norm with RMSNorm, rotary positions, a SwiGLU MLP, grouped-query attention (Llama 2 70B and
Llama 3), no biases, and (usually) an LM head of its own.
"""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import DECODER_HEADS, WeightMap, decoder_common, fused, linear, lm_head, rope, score
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    d = hf.get("hidden_size", 4096)
    heads = hf.get("num_attention_heads", 32)
    head_dim = hf.get("head_dim") or d // heads
    return ModelConfig(
        model_type="llama",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        num_layers=hf.get("num_hidden_layers", 32),
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=head_dim,
        intermediate_size=hf.get("intermediate_size", 11008),
        activation=hf.get("hidden_act", "silu"),
        gated_mlp=True,
        max_positions=hf.get("max_position_embeddings", 2048),
        position_embedding="rotary",
        rotary_dim=int(head_dim * hf.get("partial_rotary_factor", 1.0)),
        **rope(hf),
        norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        norm_position="pre",
        attention_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        hidden_dropout=0.0,
        attention_dropout=hf.get("attention_dropout", 0.0),
        **(decoder_common(hf) | dict(tie_word_embeddings=hf.get("tie_word_embeddings", False))),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    backbone: WeightMap = {"backbone.embeddings.tokens.weight": "embed_tokens.weight"}
    for i in range(cfg.num_layers):
        ours, theirs = f"backbone.layers.{i}", f"layers.{i}"
        att = f"{theirs}.self_attn"
        backbone[f"{ours}.attn_norm.weight"] = f"{theirs}.input_layernorm.weight"
        backbone |= fused(
            f"{ours}.attn.qkv", (f"{att}.q_proj", f"{att}.k_proj", f"{att}.v_proj"), bias=cfg.qkv_bias
        )
        backbone |= linear(f"{ours}.attn.out", f"{att}.o_proj", bias=cfg.attention_bias)
        backbone[f"{ours}.mlp_norm.weight"] = f"{theirs}.post_attention_layernorm.weight"
        backbone |= linear(f"{ours}.mlp.gate", f"{theirs}.mlp.gate_proj", bias=cfg.mlp_bias)
        backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.mlp.up_proj", bias=cfg.mlp_bias)
        backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.mlp.down_proj", bias=cfg.mlp_bias)
    backbone["backbone.final_norm.weight"] = "norm.weight"
    return backbone, lm_head(head) | score(head)


def layout_to_hf(cfg: ModelConfig, family: str, **switches) -> dict:
    """config.json fields of Llama's layout, shared by the families built on it (Qwen2), which
    name the ``switches`` their own config.json fixes."""
    from ._inverse import common, require

    require(cfg, family, norm="rmsnorm", norm_position="pre", position_embedding="rotary", gated_mlp=True,
            final_norm=True, embedding_norm=False, rotary_interleaved=False, lm_head_bias=False,
            embedding_size=cfg.hidden_size, **switches)
    out = dict(
        common(cfg),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        intermediate_size=cfg.intermediate_size,
        hidden_act=cfg.activation,
        max_position_embeddings=cfg.max_positions,
        rope_theta=cfg.rotary_base,
        rope_scaling=cfg.rope_scaling,
        rms_norm_eps=cfg.norm_eps,
        attention_dropout=cfg.attention_dropout,
    )
    if cfg.rotary_dim != cfg.head_dim:
        out["partial_rotary_factor"] = cfg.rotary_dim / cfg.head_dim
    return out


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    out = layout_to_hf(cfg, "Llama", qkv_bias=cfg.attention_bias)  # one switch for all four projections
    return dict(out, model_type="llama", attention_bias=cfg.attention_bias, mlp_bias=cfg.mlp_bias)


PRESET = Preset(
    name="llama",
    model_types=("llama",),
    skeleton="decoder",
    prefix="model",
    heads=DECODER_HEADS,
    class_prefix="Llama",
    tokenizer_family=None,  # the tokenizer's own files decide
    config=config,
    weights=weights,
    to_hf=to_hf,
)
