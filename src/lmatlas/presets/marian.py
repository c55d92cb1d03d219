"""Marian (Junczys-Dowmunt et al., 2018): the Transformer of "Attention is all you need", as the
OPUS-MT translation checkpoints implement it.

Post-norm layers, fixed sinusoidal positions (computed, sines then cosines), embeddings scaled by
sqrt(d_model), no norm over the embeddings and no final norms. Most checkpoints share one
vocabulary between source and target; some keep two (``share_encoder_decoder_embeddings``
false, ``decoder_vocab_size``).
"""

from __future__ import annotations

from .bart import family_preset

PRESET = family_preset(
    "marian",
    "Marian",
    dict(norm_position="post", final_norm=False, embedding_norm=False, positions="sinusoidal"),
    class_prefix="Marian",
    class_suffixes={"seq2seq-lm": "MTModel"},  # MarianMTModel
    tokenizer_family="marian",
    separate_vocabularies=True,
)
