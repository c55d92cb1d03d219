"""ALBERT (Lan et al., 2019): factorised embeddings and layers shared across depth in groups."""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import ENCODER_HEADS, WeightMap, bert_embeddings, classifier_heads, fused, linear, mlm_head, norm
from . import bert
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    hf = {"hidden_act": "gelu_new", **hf}
    cfg = bert.config(hf, head)
    return cfg.replace(
        embedding_size=hf.get("embedding_size", 128),
        embedding_projection=True,
        cross_layer_sharing=True,
        num_layer_groups=hf.get("num_hidden_groups", 1),
        inner_group_size=hf.get("inner_group_num", 1),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    backbone = bert_embeddings() | linear("backbone.embeddings.project", "encoder.embedding_hidden_mapping_in")
    for g in range(cfg.num_layer_groups):
        for j in range(cfg.inner_group_size):
            ours = f"backbone.layers.{g * cfg.inner_group_size + j}"
            theirs = f"encoder.albert_layer_groups.{g}.albert_layers.{j}"
            att = f"{theirs}.attention"
            backbone |= fused(f"{ours}.attn.qkv", (f"{att}.query", f"{att}.key", f"{att}.value"))
            backbone |= linear(f"{ours}.attn.out", f"{att}.dense")
            backbone |= norm(f"{ours}.attn_norm", f"{att}.LayerNorm")
            backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.ffn")
            backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.ffn_output")
            backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.full_layer_layer_norm")
    if cfg.pooler_activation:
        backbone |= linear("backbone.pooler.dense", "pooler")
    heads: WeightMap = classifier_heads(head)
    if head == "masked-lm":
        heads |= mlm_head("predictions.dense", "predictions.LayerNorm", "predictions.decoder", bias="predictions.bias")
    return backbone, heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import require_usual

    # ALBERT always projects its embeddings, even at the model's width.
    require_usual(cfg, "ALBERT", causal=False, embedding_projection=True, type_vocab_size=cfg.type_vocab_size,
                  cross_layer_sharing=True, num_layer_groups=cfg.num_layer_groups,
                  inner_group_size=cfg.inner_group_size)
    return dict(
        bert.to_hf(cfg),
        embedding_size=cfg.embedding_size,
        num_hidden_groups=cfg.num_layer_groups,
        inner_group_num=cfg.inner_group_size,
    )


PRESET = Preset(
    name="albert",
    model_types=("albert",),
    skeleton="encoder",
    prefix="albert",
    heads=ENCODER_HEADS | {"ForPreTraining": "masked-lm"},
    class_prefix="Albert",
    tokenizer_family="albert",
    config=config,
    weights=weights,
    to_hf=to_hf,
)
