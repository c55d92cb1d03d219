"""Pegasus (Zhang et al., 2019): pre-trained for summarisation by generating gap sentences.

Pre-norm layers with a final norm after each stack, fixed sinusoidal positions (as Marian's),
embeddings scaled by sqrt(d_model), no norm over the embeddings.
"""

from __future__ import annotations

from .bart import family_preset

PRESET = family_preset(
    "pegasus",
    "Pegasus",
    dict(norm_position="pre", final_norm=True, embedding_norm=False, positions="sinusoidal"),
    class_prefix="Pegasus",
    tokenizer_family="pegasus",
)
