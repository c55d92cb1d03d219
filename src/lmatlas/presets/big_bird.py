"""Big Bird (Zaheer et al., 2020): BERT's encoder with block-sparse attention (global, window and
random blocks; ``sparse_attention``) so that 4,096-token inputs cost linear, not quadratic,
attention; ``original_full`` keeps BERT's full attention. Its heads are BERT's, the sequence
classifier with its own dense layer and the model's activation."""

from __future__ import annotations

import math

from ..config import ModelConfig
from ..errors import LmatlasError
from ._maps import ENCODER_HEADS, WeightMap, linear, norm
from . import bert
from .preset import Preset

ATTENTION_TYPES = ("block_sparse", "original_full")


def check_attention_type(kind: str) -> None:
    if kind not in ATTENTION_TYPES:
        raise LmatlasError(f"attention_type {kind!r} is not one of {', '.join(ATTENTION_TYPES)}")


def config(hf: dict, head: str) -> ModelConfig:
    kind = hf.get("attention_type", "block_sparse")
    check_attention_type(kind)
    cfg = bert.config(hf, head)
    return cfg.replace(
        qkv_bias=hf.get("use_bias", True),
        embedding_scale=math.sqrt(cfg.hidden_size) if hf.get("rescale_embeddings", False) else 1.0,
        block_sparse=kind == "block_sparse",
        block_size=hf.get("block_size", 64),
        num_random_blocks=hf.get("num_random_blocks", 3),
        classifier_activation=cfg.activation if head == "sequence-classification" else None,
        # Every Big Bird class but the question-answering one builds the pooler.
        pooler_activation=None if head == "question-answering" else "tanh",
        question_head_sep=hf.get("sep_token_id", 66) if head == "question-answering" else None,
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    mlm = ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.decoder",
           "cls.predictions.bias")
    if head == "question-answering":  # Big Bird's own: an MLP before the span scores
        backbone, _ = bert.family_weights(cfg, "base", mlm)
        qa = "qa_classifier"
        heads = (linear("head.dense_in", f"{qa}.intermediate.dense") | linear("head.dense_out", f"{qa}.output.dense")
                 | norm("head.norm", f"{qa}.output.LayerNorm") | linear("head.out", f"{qa}.qa_outputs"))
        return backbone, heads
    backbone, heads = bert.family_weights(cfg.replace(pooler_activation=None), head, mlm, pooled="classifier")
    return backbone | linear("backbone.pooler.dense", "pooler"), heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    scaled = cfg.embedding_scale != 1.0
    if scaled and not math.isclose(cfg.embedding_scale, math.sqrt(cfg.hidden_size)):
        raise LmatlasError(f"a Big Bird config.json cannot express embedding_scale={cfg.embedding_scale!r} "
                           "(it must be 1 or sqrt(hidden_size))")
    out = bert.to_hf(cfg.replace(qkv_bias=True, embedding_scale=1.0, block_sparse=False))
    out.pop("position_embedding_type")
    if cfg.question_head_sep is not None:
        out["sep_token_id"] = cfg.question_head_sep
    return dict(
        out,
        model_type="big_bird",
        attention_type="block_sparse" if cfg.block_sparse else "original_full",
        block_size=cfg.block_size,
        num_random_blocks=cfg.num_random_blocks,
        use_bias=cfg.qkv_bias,
        rescale_embeddings=scaled,
    )


PRESET = Preset(
    name="big_bird",
    model_types=("big_bird",),
    skeleton="encoder",
    prefix="bert",
    heads=ENCODER_HEADS | {"ForPreTraining": "masked-lm"},
    class_prefix="BigBird",
    tokenizer_family=None,
    config=config,
    weights=weights,
    to_hf=to_hf,
)
