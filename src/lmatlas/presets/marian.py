"""Marian (Junczys-Dowmunt et al., 2018): the Transformer of "Attention is all you need", as the
OPUS-MT translation checkpoints implement it.

Post-norm layers, fixed sinusoidal positions (computed, sines then cosines), embeddings scaled by
sqrt(d_model), no norm over the embeddings and no final norms. Most checkpoints share one
vocabulary between source and target; some keep two (``share_encoder_decoder_embeddings``
false, ``decoder_vocab_size``).
"""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import SEQ2SEQ_HEADS, WeightMap
from .bart import family_config, family_ties, family_to_hf, family_weights

MODEL_TYPES = ("marian",)
PREFIX = "model"
HEADS = SEQ2SEQ_HEADS
LAYOUT = dict(norm_position="post", final_norm=False, embedding_norm=False, positions="sinusoidal")


def config(hf: dict, head: str) -> ModelConfig:
    return family_config(hf, "marian", **LAYOUT)


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    return family_weights(cfg, head, separate_vocabularies=True)


ties = family_ties


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    return family_to_hf(cfg, "Marian", **LAYOUT, separate_vocabularies=True)
