"""ViT (Dosovitskiy et al., 2020): an image as a sequence of 16x16 patches, read by a pre-norm
encoder after a class token; the class token's final state is classified."""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..errors import LmatlasError
from ._maps import Derived, WeightMap, fused, hf_common, linear, norm
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    hidden = hf["hidden_size"]
    if hf.get("pooler_output_size", hidden) != hidden:
        raise LmatlasError(f"pooler_output_size {hf['pooler_output_size']} is not supported (only hidden_size)")
    return ModelConfig(
        **vision_common(hf),
        # Only ViTModel builds the pooler (a dense layer and tanh over the class token).
        pooler_activation=hf.get("pooler_act", "tanh") if head == "base" else None,
        qkv_bias=hf.get("qkv_bias", True),
        final_norm=True,
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.0),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.0),
        **hf_common(hf),
    )


def vision_common(hf: dict) -> dict:
    """The fields every image encoder's config.json stores alike (ViT, CLIP's image tower)."""
    return dict(
        model_type=hf["model_type"],
        vocab_size=0,
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        activation=hf.get("hidden_act", "gelu"),
        image_size=hf.get("image_size", 224),
        patch_size=hf.get("patch_size", 16),
        num_channels=hf.get("num_channels", 3),
        norm_position="pre",
        embedding_norm=False,
        type_vocab_size=0,
        position_embedding="none",
    )


def _first(t: torch.Tensor) -> torch.Tensor:
    # ViT stores its positions as (1, patches + 1, hidden) and its class token as (1, 1, hidden).
    return t[0]


def _first_first(t: torch.Tensor) -> torch.Tensor:
    return t[0, 0]


def layer(ours: str, theirs: str, inner: str, qkv_bias: bool) -> WeightMap:
    """A pre-norm layer under ViT's names (layernorm_before, attention.{inner}.query/key/value,
    attention.output.dense, layernorm_after, intermediate.dense, output.dense), which Swin's
    blocks keep (``inner`` is ``self`` there)."""
    att = f"{theirs}.attention"
    qkv = (f"{att}.{inner}.query", f"{att}.{inner}.key", f"{att}.{inner}.value")
    m = fused(f"{ours}.attn.qkv", qkv, bias=qkv_bias) | linear(f"{ours}.attn.out", f"{att}.output.dense")
    m |= norm(f"{ours}.attn_norm", f"{theirs}.layernorm_before")
    m |= linear(f"{ours}.mlp.fc_in", f"{theirs}.intermediate.dense")
    m |= linear(f"{ours}.mlp.fc_out", f"{theirs}.output.dense")
    return m | norm(f"{ours}.mlp_norm", f"{theirs}.layernorm_after")


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    backbone: WeightMap = {
        "backbone.embeddings.class_token": Derived(("embeddings.cls_token",), _first_first),
        "backbone.embeddings.positions": Derived(("embeddings.position_embeddings",), _first),
    }
    backbone |= linear("backbone.embeddings.patches", "embeddings.patch_embeddings.projection")
    for i in range(cfg.num_layers):
        backbone |= layer(f"backbone.layers.{i}", f"encoder.layer.{i}", "attention", cfg.qkv_bias)
    backbone |= norm("backbone.final_norm", "layernorm")
    if cfg.pooler_activation:
        backbone |= linear("backbone.pooler.dense", "pooler.dense")
    heads = linear("head.out", "classifier") if head == "image-classification" else {}
    return backbone, heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import plain_heads

    plain_heads(cfg, "ViT")
    return dict(
        model_type=cfg.model_type,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act=cfg.activation,
        hidden_dropout_prob=cfg.hidden_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        layer_norm_eps=cfg.norm_eps,
        image_size=list(cfg.image_size),
        patch_size=list(cfg.patch_size),
        num_channels=cfg.num_channels,
        qkv_bias=cfg.qkv_bias,
        pooler_act=cfg.pooler_activation or "tanh",
    )


PRESET = Preset(
    name="vit",
    model_types=("vit",),
    skeleton="encoder",
    prefix="vit",
    heads={"ForImageClassification": "image-classification", "Model": "base"},
    class_prefix="ViT",
    tokenizer_family=None,
    config=config,
    weights=weights,
    to_hf=to_hf,
)
