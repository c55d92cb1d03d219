"""Training a tokenizer on text files, through the ``tokenizers`` library.

Five kinds, after the papers that used them:

- ``char``: one token per character (char-rnn, nanoGPT's Shakespeare); the vocabulary is the
  set of characters in the data, sorted, so ids match nanoGPT's ``stoi``. Characters outside it
  are dropped when encoding.
- ``bpe``: SentencePiece-style BPE over words marked with ``▁`` (Sennrich et al., 2016).
- ``byte-bpe``: GPT-2's byte-level BPE: never an unknown token.
- ``wordpiece``: BERT's lower-cased WordPiece with ``##`` continuations and [CLS]/[SEP].
- ``unigram``: the unigram language model of SentencePiece (Kudo, 2018), as in T5 and ALBERT.

The result is a folder with ``tokenizer.json`` and ``tokenizer_config.json`` that
``lmatlas.load_tokenizer`` and ``transformers.AutoTokenizer`` both read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import LmatlasError
from ..files import read_text
from .fields import FieldError

KINDS = ("char", "bpe", "byte-bpe", "wordpiece", "unigram")

DEFAULT_SPECIALS: dict[str, list[str]] = {
    "char": [],
    "bpe": ["<pad>", "<unk>", "<s>", "</s>", "<mask>"],
    "byte-bpe": ["<|endoftext|>"],
    "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "unigram": ["<pad>", "<unk>", "<s>", "</s>", "<mask>"],
}

# The role of a special token, by its usual spelling.
_ROLES = {
    "[PAD]": ("pad_token",), "<pad>": ("pad_token",),
    "[UNK]": ("unk_token",), "<unk>": ("unk_token",),
    "[CLS]": ("cls_token",), "[SEP]": ("sep_token",),
    "<s>": ("bos_token", "cls_token"), "</s>": ("eos_token", "sep_token"),
    "[MASK]": ("mask_token",), "<mask>": ("mask_token",),
    "<|endoftext|>": ("bos_token", "eos_token", "unk_token"),
}  # fmt: skip


def read_texts(files: Sequence[str | os.PathLike]) -> list[str]:
    """The text of each file, strictly UTF-8; one clear error for a missing or empty file."""
    if not files:
        raise FieldError(lambda f: f"no data files given ({f('data')})")
    texts = []
    for f in files:
        texts.append(read_text(f, exact=True))
    if not any(t.strip() for t in texts):
        raise LmatlasError(f"{', '.join(map(str, files))}: no text (the data is empty)")
    return texts


def _lines(texts: Iterable[str]) -> Iterable[str]:
    for text in texts:
        yield from text.splitlines(keepends=True)


def build(kind: str, texts: Sequence[str], vocab_size: int | None = None, specials: Sequence[str] | None = None,
          min_frequency: int = 2):
    """A trained ``tokenizers.Tokenizer`` of the given kind, and its special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind not in KINDS:
        raise FieldError(lambda f: f"{f('kind')} must be one of {', '.join(KINDS)}, not {kind!r}")
    specials = list(DEFAULT_SPECIALS[kind] if specials is None else specials)
    if kind != "char":
        if vocab_size is None:
            raise FieldError(lambda f: f"{f('vocab_size')} is needed for a {kind} tokenizer")
        if vocab_size < len(specials) + 1:
            raise FieldError(lambda f: f"{f('vocab_size')} {vocab_size} is too small for {len(specials)} special tokens")

    if kind == "char":
        chars = sorted(set("".join(texts)) - set("".join(specials)) or set())
        vocab = {c: i for i, c in enumerate(chars)}
        for s in specials:
            vocab.setdefault(s, len(vocab))
        if vocab_size is not None and len(vocab) > vocab_size:
            raise FieldError(lambda f: f"the data has {len(vocab)} distinct characters, more than "
                                       f"{f('vocab_size')} {vocab_size}")
        # BPE without merges over whitespace-split words: every character is its own token,
        # and words stay words (for whole-word masking).
        tok = Tokenizer(models.BPE(vocab, [], unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s"), behavior="isolated")
        tok.decoder = decoders.Fuse()
    elif kind == "byte-bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(_lines(texts), trainer)
    elif kind == "wordpiece":
        unk = "[UNK]" if "[UNK]" in specials else (specials[0] if specials else "[UNK]")
        tok = Tokenizer(models.WordPiece(unk_token=unk))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=specials, show_progress=False)
        tok.train_from_iterator(_lines(texts), trainer)
        if "[CLS]" in specials and "[SEP]" in specials:
            cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
            tok.post_processor = processors.TemplateProcessing(
                single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
            )
    else:  # bpe, unigram: SentencePiece's way, words marked with ▁
        tok = Tokenizer(models.BPE(unk_token="<unk>" if "<unk>" in specials else None) if kind == "bpe"
                        else models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        if kind == "bpe":
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                          special_tokens=specials, show_progress=False)
        else:
            trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                              unk_token="<unk>" if "<unk>" in specials else None)
        tok.train_from_iterator(_lines(texts), trainer)
        if "<s>" in specials and "</s>" in specials:
            bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
            tok.post_processor = processors.TemplateProcessing(
                single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
            )
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok, specials


def special_roles(specials: Sequence[str]) -> dict[str, str]:
    """tokenizer_config.json's named special tokens (pad_token, mask_token...), by spelling."""
    roles: dict[str, str] = {}
    for s in specials:
        for role in _ROLES.get(s, ()):
            roles.setdefault(role, s)
    return roles


def write(tok, specials: Sequence[str], out: str | os.PathLike, model_max_length: int | None = None) -> Path:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok.no_padding()
    tok.no_truncation()
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        **special_roles(specials),
    }
    extra = [s for s in specials if s not in _ROLES]
    if extra:
        config["additional_special_tokens"] = extra
    if model_max_length:
        config["model_max_length"] = model_max_length
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def train_tokenizer(
    files: Sequence[str | os.PathLike],
    kind: str,
    out: str | os.PathLike,
    vocab_size: int | None = None,
    specials: Sequence[str] | None = None,
    min_frequency: int = 2,
) -> Path:
    """Train a tokenizer of ``kind`` on ``files`` and write it to ``out``."""
    texts = read_texts(files)
    tok, specials = build(kind, texts, vocab_size, specials, min_frequency)
    return write(tok, specials, out)


__all__ = ["DEFAULT_SPECIALS", "KINDS", "build", "read_texts", "special_roles", "train_tokenizer", "write"]
