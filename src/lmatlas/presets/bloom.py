"""BLOOM (BigScience, 2022): a multilingual open GPT-3-sized model with ALiBi positions.

No position embeddings: each head adds a linear penalty on key distance to its scores (ALiBi).
A norm right after the word embeddings; pre-norm layers; q/k/v fused per head.
"""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import DECODER_HEADS, WeightMap, decoder_common, grouped_qkv, linear, lm_head, norm, score
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    d = hf.get("hidden_size", hf.get("n_embed", 64))
    return ModelConfig(
        model_type="bloom",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        num_layers=hf.get("n_layer", hf.get("num_hidden_layers", 2)),
        num_heads=hf.get("n_head", hf.get("num_attention_heads", 8)),
        intermediate_size=4 * d,
        activation="gelu_new",
        max_positions=hf.get("seq_length", 2048),
        position_embedding="alibi",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        norm_position="pre",
        residual_from_norm=bool(hf.get("apply_residual_connection_post_layernorm", False)),
        hidden_dropout=hf.get("hidden_dropout", 0.0),
        attention_dropout=hf.get("attention_dropout", 0.0),
        **(decoder_common(hf) | dict(embedding_norm=True)),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    backbone: WeightMap = {"backbone.embeddings.tokens.weight": "word_embeddings.weight"}
    backbone |= norm("backbone.embeddings.norm", "word_embeddings_layernorm")
    for i in range(cfg.num_layers):
        ours, theirs = f"backbone.layers.{i}", f"h.{i}"
        att = f"{theirs}.self_attention"
        backbone |= norm(f"{ours}.attn_norm", f"{theirs}.input_layernorm")
        backbone |= grouped_qkv(f"{ours}.attn.qkv", f"{att}.query_key_value", cfg.num_heads, cfg.num_heads, cfg.head_dim)
        backbone |= linear(f"{ours}.attn.out", f"{att}.dense")
        backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.post_attention_layernorm")
        backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.mlp.dense_h_to_4h")
        backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.mlp.dense_4h_to_h")
    backbone |= norm("backbone.final_norm", "ln_f")
    return backbone, lm_head(head) | score(head)


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, plain_heads, require_usual

    plain_heads(cfg, "BLOOM")
    # ALiBi added after the scaling, and an MLP four times the width of tanh-GELU: fixed in BLOOM.
    require_usual(cfg, "BLOOM", causal=True, norm="layernorm", norm_position="pre", position_embedding="alibi",
                  alibi_before_scale=False, embedding_norm=True, final_norm=True,
                  residual_from_norm=cfg.residual_from_norm, intermediate_size=4 * cfg.hidden_size,
                  activation="gelu_new", gated_mlp=False, attention_bias=True, qkv_bias=True, mlp_bias=True,
                  attention_scale=None, embedding_size=cfg.hidden_size, lm_head_bias=False, norm_affine=True)
    return dict(
        common(cfg),
        model_type="bloom",
        hidden_size=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        # Not read by transformers (ALiBi has no length limit); lmatlas keeps it as max_positions.
        seq_length=cfg.max_positions,
        layer_norm_epsilon=cfg.norm_eps,
        apply_residual_connection_post_layernorm=cfg.residual_from_norm,
        hidden_dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
    )


PRESET = Preset(
    name="bloom",
    model_types=("bloom",),
    skeleton="decoder",
    prefix="transformer",
    heads=DECODER_HEADS,
    class_prefix="Bloom",
    tokenizer_family=None,  # the tokenizer's own files decide
    config=config,
    weights=weights,
    to_hf=to_hf,
)
