"""mBART (Liu et al., 2020): BART pre-trained on many languages at once.

BART's layers made pre-norm, with a final norm after each stack; embeddings scaled by
sqrt(d_model) in the released checkpoints (``scale_embedding``). Sentences carry a language
code (the tokenizer's business); generation picks the target language with
``forced_bos_token_id``.
"""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import SEQ2SEQ_HEADS
from .bart import family_config, family_ties, family_to_hf, family_weights

MODEL_TYPES = ("mbart",)
PREFIX = "model"
HEADS = SEQ2SEQ_HEADS
LAYOUT = dict(norm_position="pre", final_norm=True, embedding_norm=True, positions="learned")


def config(hf: dict, head: str) -> ModelConfig:
    return family_config(hf, "mbart", **LAYOUT)


weights = family_weights
ties = family_ties


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    return family_to_hf(cfg, "mBART", **LAYOUT)
