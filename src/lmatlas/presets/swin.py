"""Swin (Liu et al., 2021): shifted windows of attention over patches, in stages that merge
patches and widen (``lmatlas.windows``); the average of the last patches is classified."""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import LmatlasError
from ._maps import WeightMap, hf_common, linear, norm
from .preset import Preset
from .vit import layer


def config(hf: dict, head: str) -> ModelConfig:
    if hf.get("use_absolute_embeddings"):
        raise LmatlasError("use_absolute_embeddings is not supported (Swin checkpoints leave it off)")
    depths, heads = list(hf.get("depths", [2, 2, 6, 2])), list(hf.get("num_heads", [3, 6, 12, 24]))
    if len(depths) != len(heads):
        raise LmatlasError(f"depths ({len(depths)} stages) and num_heads ({len(heads)}) must name the same stages")
    embed, ratio = hf.get("embed_dim", 96), float(hf.get("mlp_ratio", 4.0))
    return ModelConfig(
        model_type=hf["model_type"],
        vocab_size=0,
        hidden_size=embed,
        num_layers=sum(depths),
        num_heads=heads[0],
        intermediate_size=int(ratio * embed),
        mlp_ratio=ratio,
        stage_depths=depths,
        stage_heads=heads,
        window_size=hf.get("window_size", 7),
        image_size=hf.get("image_size", 224),
        patch_size=hf.get("patch_size", 4),
        num_channels=hf.get("num_channels", 3),
        qkv_bias=hf.get("qkv_bias", True),
        activation=hf.get("hidden_act", "gelu"),
        norm_position="pre",
        norm_eps=hf.get("layer_norm_eps", 1e-5),
        pooling="mean",
        position_embedding="none",
        type_vocab_size=0,
        hidden_dropout=hf.get("hidden_dropout_prob", 0.0),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.0),
        **hf_common(hf),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    backbone: WeightMap = linear("backbone.patches", "embeddings.patch_embeddings.projection")
    backbone |= norm("backbone.embedding_norm", "embeddings.norm")
    for i, depth in enumerate(cfg.stage_depths):
        for j in range(depth):
            ours, theirs = f"backbone.stages.{i}.blocks.{j}", f"encoder.layers.{i}.blocks.{j}"
            backbone |= layer(ours, theirs, "self", cfg.qkv_bias)
            backbone[f"{ours}.relative_bias"] = f"{theirs}.attention.self.relative_position_bias_table"
        if i < len(cfg.stage_depths) - 1:
            backbone |= norm(f"backbone.stages.{i}.merge.norm", f"encoder.layers.{i}.downsample.norm")
            backbone |= linear(f"backbone.stages.{i}.merge.reduction", f"encoder.layers.{i}.downsample.reduction", bias=False)
    backbone |= norm("backbone.final_norm", "layernorm")
    heads = linear("head.out", "classifier") if head == "image-classification" else {}
    return backbone, heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    return dict(
        model_type=cfg.model_type,
        embed_dim=cfg.hidden_size,
        depths=list(cfg.stage_depths),
        num_heads=list(cfg.stage_heads),
        window_size=cfg.window_size,
        mlp_ratio=cfg.mlp_ratio,
        image_size=list(cfg.image_size),
        patch_size=list(cfg.patch_size),
        num_channels=cfg.num_channels,
        qkv_bias=cfg.qkv_bias,
        hidden_act=cfg.activation,
        layer_norm_eps=cfg.norm_eps,
        use_absolute_embeddings=False,
        hidden_dropout_prob=cfg.hidden_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
    )


PRESET = Preset(
    name="swin",
    model_types=("swin",),
    skeleton="encoder",
    prefix="swin",
    heads={"ForImageClassification": "image-classification", "Model": "base"},
    class_prefix="Swin",
    tokenizer_family=None,
    config=config,
    weights=weights,
    to_hf=to_hf,
)
