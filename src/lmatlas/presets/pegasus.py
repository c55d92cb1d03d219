"""Pegasus (Zhang et al., 2019): pre-trained for summarisation by generating gap sentences.

Pre-norm layers with a final norm after each stack, fixed sinusoidal positions (as Marian's),
embeddings scaled by sqrt(d_model), no norm over the embeddings.
"""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import SEQ2SEQ_HEADS
from .bart import family_config, family_ties, family_to_hf, family_weights

MODEL_TYPES = ("pegasus",)
PREFIX = "model"
HEADS = SEQ2SEQ_HEADS
LAYOUT = dict(norm_position="pre", final_norm=True, embedding_norm=False, positions="sinusoidal")


def config(hf: dict, head: str) -> ModelConfig:
    return family_config(hf, "pegasus", **LAYOUT)


weights = family_weights
ties = family_ties


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    return family_to_hf(cfg, "Pegasus", **LAYOUT)
