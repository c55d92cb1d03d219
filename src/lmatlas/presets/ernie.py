"""ERNIE (Sun et al., 2019; 2.0 and 3.0 after it): BERT's encoder, whose later checkpoints add a
task-type embedding (``use_task_id``) beside the token types. Its idea is in the training
data, not the network: whole phrases and entities are masked together (``training``'s
``phrases``), so that predicting them takes knowledge, not just the neighbouring word pieces."""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import ENCODER_HEADS, WeightMap
from . import bert
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    cfg = bert.config(hf, head)
    return cfg.replace(task_type_vocab_size=hf.get("task_type_vocab_size", 3) if hf.get("use_task_id") else 0)


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    backbone, heads = bert.weights(cfg, head)
    if cfg.task_type_vocab_size:
        backbone["backbone.embeddings.task_types.weight"] = "embeddings.task_type_embeddings.weight"
    return backbone, heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    out = bert.to_hf(cfg.replace(task_type_vocab_size=0))
    out["use_task_id"] = bool(cfg.task_type_vocab_size)
    if cfg.task_type_vocab_size:
        out["task_type_vocab_size"] = cfg.task_type_vocab_size
    return out


PRESET = Preset(
    name="ernie",
    model_types=("ernie",),
    skeleton="encoder",
    prefix="ernie",
    heads=ENCODER_HEADS | {"ForPreTraining": "masked-lm"},
    class_prefix="Ernie",
    tokenizer_family="bert",
    config=config,
    weights=weights,
    to_hf=to_hf,
)
