"""DistilBERT (Sanh et al., 2019): BERT with half the layers, no token types and no pooler."""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import ENCODER_HEADS, WeightMap, classifier_heads, fused, hf_common, linear, mlm_head, norm
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    return ModelConfig(
        model_type="distilbert",
        vocab_size=hf["vocab_size"],
        hidden_size=hf.get("dim", 768),
        num_layers=hf.get("n_layers", 6),
        num_heads=hf.get("n_heads", 12),
        intermediate_size=hf.get("hidden_dim", 3072),
        activation=hf.get("activation", "gelu"),
        max_positions=hf.get("max_position_embeddings", 512),
        # DistilBERT stores its position table even when it is the fixed sinusoidal one.
        position_embedding="sinusoidal" if hf.get("sinusoidal_pos_embds") else "learned",
        type_vocab_size=0,
        norm_eps=1e-12,
        hidden_dropout=hf.get("dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.1),
        mlm_activation=hf.get("activation", "gelu"),
        classifier_activation="relu",
        **hf_common(hf),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    backbone: WeightMap = {
        "backbone.embeddings.tokens.weight": "embeddings.word_embeddings.weight",
        "backbone.embeddings.positions.weight": "embeddings.position_embeddings.weight",
    }
    backbone |= norm("backbone.embeddings.norm", "embeddings.LayerNorm")
    for i in range(cfg.num_layers):
        ours, theirs = f"backbone.layers.{i}", f"transformer.layer.{i}"
        att = f"{theirs}.attention"
        backbone |= fused(f"{ours}.attn.qkv", (f"{att}.q_lin", f"{att}.k_lin", f"{att}.v_lin"))
        backbone |= linear(f"{ours}.attn.out", f"{att}.out_lin")
        backbone |= norm(f"{ours}.attn_norm", f"{theirs}.sa_layer_norm")
        backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.ffn.lin1")
        backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.ffn.lin2")
        backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.output_layer_norm")
    heads: WeightMap = {}
    if head == "sequence-classification":
        heads |= linear("head.pooler.dense", "pre_classifier") | linear("head.out", "classifier")
    else:
        heads |= classifier_heads(head)
    if head == "masked-lm":
        heads |= mlm_head("vocab_transform", "vocab_layer_norm", "vocab_projector")
    return backbone, heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, plain_heads, require

    plain_heads(cfg, "DistilBERT")
    require(cfg, "DistilBERT", norm="layernorm", norm_position="post", gated_mlp=False, attention_bias=True,
            mlp_bias=True, embedding_norm=True, final_norm=False, type_vocab_size=0, norm_affine=True)
    return dict(
        common(cfg),
        model_type="distilbert",
        dim=cfg.hidden_size,
        n_layers=cfg.num_layers,
        n_heads=cfg.num_heads,
        hidden_dim=cfg.intermediate_size,
        activation=cfg.activation,
        max_position_embeddings=cfg.max_positions,
        sinusoidal_pos_embds=cfg.position_embedding == "sinusoidal",
        dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
    )


PRESET = Preset(
    name="distilbert",
    model_types=("distilbert",),
    skeleton="encoder",
    prefix="distilbert",
    heads=ENCODER_HEADS,
    class_prefix="DistilBert",
    tokenizer_family="distilbert",
    config=config,
    weights=weights,
    to_hf=to_hf,
)
