"""BERT (Devlin et al., 2018): post-norm encoder, learned positions, token types, pooler."""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import LmatlasError
from ._maps import ENCODER_HEADS, WeightMap, bert_embeddings, bert_layers, classifier_heads, hf_common, linear, mlm_head
from .preset import Preset

# The heads whose transformers class builds the pooler.
POOLED_HEADS = ("base", "sequence-classification")


def config(hf: dict, head: str) -> ModelConfig:
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise LmatlasError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported (only absolute)")
    return ModelConfig(
        model_type=hf["model_type"],
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        activation=hf.get("hidden_act", "gelu"),
        max_positions=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        pooler_activation="tanh" if head in POOLED_HEADS else None,
        mlm_activation=hf.get("hidden_act", "gelu"),
        **hf_common(hf),
    )


def family_weights(
    cfg: ModelConfig, head: str, mlm: tuple[str, str, str, str | None], pooled: str | None = None
) -> tuple[WeightMap, WeightMap]:
    """BERT's weight names, which RoBERTa, XLM-R and ELECTRA keep but for their heads': ``mlm``
    the masked-LM head's (``_maps.mlm_head``), ``pooled`` the sequence head's own dense layer's."""
    backbone = bert_embeddings() | bert_layers(cfg.num_layers)
    if cfg.pooler_activation:
        backbone |= linear("backbone.pooler.dense", "pooler.dense")
    heads: WeightMap = classifier_heads(head, pooled)
    if head == "masked-lm":
        heads |= mlm_head(*mlm)
    return backbone, heads


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    mlm = ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.decoder",
           "cls.predictions.bias")
    return family_weights(cfg, head, mlm)


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, plain_heads, require

    plain_heads(cfg, "BERT")
    require(cfg, "BERT", norm="layernorm", norm_position="post", position_embedding="learned", gated_mlp=False,
            attention_bias=True, mlp_bias=True, embedding_norm=True, final_norm=False, norm_affine=True,
            task_type_vocab_size=0, block_sparse=False)
    return dict(
        common(cfg),
        model_type=cfg.model_type,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act=cfg.activation,
        max_position_embeddings=cfg.max_positions,
        type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.norm_eps,
        hidden_dropout_prob=cfg.hidden_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        position_embedding_type="absolute",
    )


PRESET = Preset(
    name="bert",
    model_types=("bert",),
    skeleton="encoder",
    prefix="bert",
    heads=ENCODER_HEADS | {"ForPreTraining": "masked-lm"},
    class_prefix="Bert",
    tokenizer_family="bert",
    config=config,
    weights=weights,
    to_hf=to_hf,
)
