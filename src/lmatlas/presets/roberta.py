"""RoBERTa (Liu et al., 2019) and XLM-RoBERTa: BERT's encoder, positions counted after padding."""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import ENCODER_HEADS, WeightMap
from . import bert
from .preset import Preset

POOLED_HEADS = ("base",)


def config(hf: dict, head: str) -> ModelConfig:
    cfg = bert.config(hf, head)
    return cfg.replace(
        positions_from_padding=True,
        pooler_activation="tanh" if head in POOLED_HEADS else None,
        mlm_activation="gelu",
        classifier_activation="tanh",
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    mlm = ("lm_head.dense", "lm_head.layer_norm", "lm_head.decoder", "lm_head.bias")
    return bert.family_weights(cfg, head, mlm, pooled="classifier")


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import require

    require(cfg, "RoBERTa", positions_from_padding=True)
    return bert.to_hf(cfg)


PRESET = Preset(
    name="roberta",
    model_types=("roberta", "xlm-roberta"),
    skeleton="encoder",
    prefix="roberta",
    heads=ENCODER_HEADS,
    class_prefix={"roberta": "Roberta", "xlm-roberta": "XLMRoberta"},
    tokenizer_family={"roberta": "roberta", "xlm-roberta": "xlm-roberta"},
    config=config,
    weights=weights,
    to_hf=to_hf,
)
