"""ELECTRA (Clark et al., 2020): a generator (masked LM) and a discriminator that detects
replaced tokens, on BERT's encoder with factorised embeddings when they are narrower."""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import ENCODER_HEADS, WeightMap, linear
from . import bert
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    cfg = bert.config(hf, head)
    e = hf.get("embedding_size", cfg.hidden_size)
    return cfg.replace(
        embedding_size=e,
        embedding_projection=e != cfg.hidden_size,
        pooler_activation=None,
        mlm_activation="gelu",
        classifier_activation="gelu",
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    mlm = ("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head", None)
    backbone, heads = bert.family_weights(cfg, head, mlm, pooled="classifier")
    if cfg.embedding_projection:
        backbone |= linear("backbone.embeddings.project", "embeddings_project")
    if head == "replaced-token-detection":
        heads |= linear("head.dense", "discriminator_predictions.dense")
        heads |= linear("head.out", "discriminator_predictions.dense_prediction")
    return backbone, heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    out = bert.to_hf(cfg)
    out["embedding_size"] = cfg.embedding_size
    return out


PRESET = Preset(
    name="electra",
    model_types=("electra",),
    skeleton="encoder",
    prefix="electra",
    heads=ENCODER_HEADS | {"ForPreTraining": "replaced-token-detection"},
    class_prefix="Electra",
    tokenizer_family="electra",
    config=config,
    weights=weights,
    to_hf=to_hf,
)
