"""Tokenizers: one interface, whatever files a checkpoint ships.

``load_tokenizer(folder)`` reads, in order of preference:

1. ``tokenizer.json`` (the ``tokenizers`` library's own format);
2. a WordPiece ``vocab.txt`` (BERT, DistilBERT, ELECTRA, MPNet);
3. a byte-level BPE ``vocab.json`` + ``merges.txt`` (GPT-2, OPT; RoBERTa, BART, Longformer);
4. a SentencePiece ``spiece.model`` (ALBERT, T5, Pegasus) or ``sentencepiece.bpe.model``
   (XLM-RoBERTa, mBART);
5. Marian's ``source.spm`` + ``target.spm`` + ``vocab.json`` (OPUS-MT translation models),

plus ``tokenizer_config.json`` / ``special_tokens_map.json`` / ``config.json`` for the special
tokens and settings, and the chat template (``chat_template.jinja`` or tokenizer_config.json's).
From the original files (2-4) it assembles the same ``tokenizers`` pipeline that Hugging Face's
slow-to-fast conversion builds, so ids, offsets and decoded text match
``transformers.AutoTokenizer`` on the same folder. All the work is done by the Rust
``tokenizers`` library; this module only wires it up and gives it an HF-like face. Marian, which
transformers tokenizes only with the ``sentencepiece`` library itself (there is no fast Marian
tokenizer), is segmented the same way — by ``sentencepiece``, source model for inputs, target
model for ``text_target`` — and the pieces go through a ``tokenizers`` word-level vocabulary
(``vocab.json``) for ids, specials, padding and truncation.

What differs between model families (default special tokens, the template around a sequence,
how SentencePiece ids are laid out, ...) lives in one table, ``FAMILIES``; a new family is a new
row, not new branches through the code.

The parts: ``families`` (that table), ``sentencepiece_model`` (reading a ``.model``),
``backends`` (pipelines built from the original files), ``special_tokens``, ``loading``
(``load_tokenizer``), ``core`` (the ``Tokenizer``), ``encoding`` (``BatchEncoding``) and
``languages`` (mBART's language codes).
"""

from .core import Tokenizer
from .encoding import BatchEncoding
from .families import FAMILIES, Family, family_for
from .loading import load_tokenizer
from .padding import VERY_LARGE_INTEGER
from .saving import save_tokenizer
from .sentencepiece_model import SpmModel, read_sentencepiece_model

__all__ = [
    "save_tokenizer",
    "FAMILIES",
    "VERY_LARGE_INTEGER",
    "BatchEncoding",
    "Family",
    "SpmModel",
    "Tokenizer",
    "family_for",
    "load_tokenizer",
    "read_sentencepiece_model",
]
