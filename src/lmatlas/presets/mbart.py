"""mBART (Liu et al., 2020): BART pre-trained on many languages at once.

BART's layers made pre-norm, with a final norm after each stack; embeddings scaled by
sqrt(d_model) in the released checkpoints (``scale_embedding``). Sentences carry a language
code (the tokenizer's business); generation picks the target language with
``forced_bos_token_id``.
"""

from __future__ import annotations

from .bart import family_preset

PRESET = family_preset(
    "mbart",
    "mBART",
    dict(norm_position="pre", final_norm=True, embedding_norm=True, positions="learned"),
    class_prefix="MBart",
    tokenizer_family="mbart",
)
