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
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as RustTokenizer

from .chat import read_chat_template
from .checkpoint import resolve
from .errors import LmatlasError

__all__ = ["BatchEncoding", "Tokenizer", "load_tokenizer", "read_sentencepiece_model", "VERY_LARGE_INTEGER"]

# HF's stand-in for "this model has no length limit" (model_max_length when nothing says one).
VERY_LARGE_INTEGER = int(1e30)
# Above this, model_max_length counts as unset when truncation or padding asks for it.
_LARGE_INTEGER = int(1e20)

# The order HF lists special tokens in (all_special_tokens, and the order they are added).
SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# ---------------------------------------------------------------------------------------------
# The family table
# ---------------------------------------------------------------------------------------------

# Token types of SentencePiece pieces (sentencepiece_model.proto, SentencePiece.Type).
_SPM_NORMAL, _SPM_UNKNOWN, _SPM_CONTROL, _SPM_USER_DEFINED = 1, 2, 3, 4


@dataclass(frozen=True)
class SpmModel:
    """What lmatlas needs from a SentencePiece ``.model`` file."""

    pieces: list[tuple[str, float, int]]  # (piece, score, type), in id order
    model_type: int  # 1 unigram, 2 BPE, 3 word, 4 char
    unk_id: int
    unk_piece: str
    precompiled_charsmap: bytes
    add_dummy_prefix: bool
    remove_extra_whitespaces: bool


@dataclass(frozen=True)
class Family:
    """How one family of checkpoints tokenizes, where it differs from the others.

    ``files`` is the kind of original vocabulary it reads ("wordpiece", "bytelevel", "spm"),
    ``specials`` the default special tokens (overridden by tokenizer_config.json), ``template``
    builds the post-processor from the tokenizer's settings and special-token ids. The SentencePiece
    hooks turn the ``.model`` pieces into the vocabulary and build the normalizer.
    """

    files: str | None
    specials: dict[str, str]
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    # HF's clean_up_tokenization_spaces default when the tokenizer is built from the original files
    # (the slow class's default); from tokenizer.json it is False unless the config says otherwise.
    clean_up: bool = False
    # Flags of a mask token given as a plain string: in RoBERTa, ALBERT, ... it swallows the
    # space before it ("Hello <mask>!" has no token for that space). None: like the others.
    mask_flags: dict | None = None
    # Whether special tokens made from plain strings match the normalized text (only GPT-2 and
    # RoBERTa's slow classes do this; it matters when a special token is not in the vocabulary).
    specials_normalized: bool = False
    # BERT-like classes re-apply do_lower_case / strip_accents / tokenize_chinese_chars from the
    # config onto a tokenizer.json's BertNormalizer; RoBERTa-like ones re-apply add_prefix_space /
    # trim_offsets onto its post-processor.
    bert_options: bool = False
    roberta_options: bool = False
    template: Callable[[dict, "_Ids"], Any] | None = None
    spm_vocab: Callable[[SpmModel, dict], list[tuple[str, float]]] | None = None
    spm_unk_id: Callable[[SpmModel, dict], int] | None = None
    spm_normalizer: Callable[[SpmModel, dict], Any] | None = None
    # Pegasus cuts the text at whitespace before SentencePiece's space marker goes in, so tabs and
    # newlines separate words as spaces do (the others keep them inside pieces).
    spm_split_whitespace: bool = False
    # Additional special tokens the class always has, from the config: T5's sentinels
    # <extra_id_N>, mBART's language codes, Pegasus' <mask_1> and <unk_N> placeholders.
    extra_specials: Callable[[dict], list[str]] | None = None
    # Multilingual classes (mBART): the language codes; the template puts the source language
    # (``src_lang``) around each text, ``language_template(code, ids)`` builds it.
    languages: tuple[str, ...] = ()
    language_template: Callable[[str, "_Ids"], Any] | None = None
    # T5's ``legacy: false``: only the first word of a text gets the SentencePiece space marker
    # (the others keep what the text has), as HF's converter does for classes with that flag.
    legacy_option: bool = False
    # Settings the slow class defaults to when tokenizer_config.json says nothing (Marian: 512).
    settings: dict = dataclasses.field(default_factory=dict)


class _Ids:
    """Special tokens of a tokenizer being built: ``ids.cls`` is ``(token, id)``."""

    def __init__(self, specials: dict[str, str | None], backend: RustTokenizer, source: str):
        self._specials, self._backend, self._source = specials, backend, source

    def __getattr__(self, short: str) -> tuple[str, int]:
        token = self._specials.get(short + "_token")
        token_id = None if token is None else self._backend.token_to_id(token)
        if token_id is None:
            raise LmatlasError(f"{self._source} has no {short} token, which this tokenizer puts around each text")
        return token, token_id

    def token(self, token: str) -> int:
        """The id of a token the template names itself (a language code)."""
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise LmatlasError(f"{self._source} has no token {token!r} in its vocabulary")
        return token_id


def _bert_template(cfg: dict, ids: _Ids):
    (cls, cls_id), (sep, sep_id) = ids.cls, ids.sep
    return processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, cls_id), (sep, sep_id)],
    )


def _mpnet_template(cfg: dict, ids: _Ids):
    # MPNet separates a pair with two separators, like RoBERTa, but keeps WordPiece.
    (cls, cls_id), (sep, sep_id) = ids.cls, ids.sep
    return processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, cls_id), (sep, sep_id)],
    )


def _gpt2_template(cfg: dict, ids: _Ids):
    if cfg.get("add_bos_token", False):  # OPT: every sequence starts with </s> (its bos)
        bos, bos_id = ids.bos
        return processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 $B:1", special_tokens=[(bos, bos_id)]
        )
    # Adds nothing; kept because HF has it (it is what makes offsets byte-level aware).
    return processors.ByteLevel(trim_offsets=False)


def _roberta_template(cfg: dict, ids: _Ids):
    return processors.RobertaProcessing(
        sep=ids.sep,
        cls=ids.cls,
        add_prefix_space=cfg.get("add_prefix_space", False),
        trim_offsets=cfg.get("trim_offsets", True),
    )


def _fairseq_template(cfg: dict, ids: _Ids):
    # RoBERTa's layout with SentencePiece: every token type is 0, even in pairs.
    (cls, cls_id), (sep, sep_id) = ids.cls, ids.sep
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {sep} $B {sep}",
        special_tokens=[(cls, cls_id), (sep, sep_id)],
    )


def _t5_template(cfg: dict, ids: _Ids):
    eos, eos_id = ids.eos
    return processors.TemplateProcessing(
        single=["$A", eos], pair=["$A", eos, "$B", eos], special_tokens=[(eos, eos_id)]
    )


def _t5_extra_ids(cfg: dict) -> list[str]:
    # T5's sentinels for span corruption, <extra_id_0> ... <extra_id_{extra_ids - 1}>, unless the
    # config already lists them among its additional special tokens.
    given = [_content(t) for t in cfg.get("additional_special_tokens") or []]
    if any("<extra_id_" in t for t in given):
        return given
    return given + [f"<extra_id_{i}>" for i in range(_extra_id_count(cfg))]


def _extra_id_count(cfg: dict) -> int:
    n = cfg.get("extra_ids", 100)
    if not isinstance(n, int) or n < 0:
        raise LmatlasError(f"extra_ids in tokenizer_config.json must be a whole number >= 0, not {n!r}")
    return n


def _t5_vocab(spm: SpmModel, cfg: dict) -> list[tuple[str, float]]:
    # The sentinels come after the SentencePiece pieces, the last id being <extra_id_0>.
    extra = [(f"<extra_id_{i}>", 0.0) for i in reversed(range(_extra_id_count(cfg)))]
    return [(p, s) for p, s, _ in spm.pieces] + extra


# fairseq's language codes of mBART (cc25) and mBART-50, after the SentencePiece pieces.
_MBART_LANGUAGES = (
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN", "it_IT",
    "ja_XX", "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO", "ru_RU", "si_LK",
    "tr_TR", "vi_VN", "zh_CN",
)  # fmt: skip
_MBART50_LANGUAGES = _MBART_LANGUAGES + (
    "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE", "km_KH", "mk_MK", "ml_IN",
    "mn_MN", "mr_IN", "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN", "te_IN", "th_TH", "tl_XX",
    "uk_UA", "ur_PK", "xh_ZA", "gl_ES", "sl_SI",
)  # fmt: skip


def _mbart_vocab(languages: tuple[str, ...]):
    def vocab(spm: SpmModel, cfg: dict) -> list[tuple[str, float]]:
        head = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
        return head + [(p, s) for p, s, _ in spm.pieces[3:]] + [(c, 0.0) for c in languages] + [("<mask>", 0.0)]

    return vocab


def _mbart_extra(languages: tuple[str, ...]):
    def extra(cfg: dict) -> list[str]:
        given = [_content(t) for t in cfg.get("additional_special_tokens") or []]
        return list(languages) + [t for t in given if t not in languages]

    return extra


def _mbart_language_template(code: str, ids: _Ids):
    # mBART (cc25): the text, </s>, then its language code.
    (eos, eos_id), lang_id = ids.eos, ids.token(code)
    return processors.TemplateProcessing(
        single=["$A", eos, code], pair=["$A", "$B", eos, code], special_tokens=[(eos, eos_id), (code, lang_id)]
    )


def _mbart50_language_template(code: str, ids: _Ids):
    # mBART-50: the language code first, then the text and </s>.
    (eos, eos_id), lang_id = ids.eos, ids.token(code)
    return processors.TemplateProcessing(
        single=[code, "$A", eos], pair=[code, "$A", "$B", eos], special_tokens=[(code, lang_id), (eos, eos_id)]
    )


def _marian_template(cfg: dict, ids: _Ids):
    eos, eos_id = ids.eos
    return processors.TemplateProcessing(
        single=["$A", eos], pair=["$A", "$B", eos], special_tokens=[(eos, eos_id)]
    )


_PEGASUS_SPECIALS = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask_2>"}


def _pegasus_offset(cfg: dict) -> int:
    # How far the SentencePiece pieces are moved up, for <mask_1>, <mask_2> and <unk_2> ...
    # <unk_{offset - 1}>, tokens only pre-training used (103 by default). Below 4 the masks do not
    # fit and the pieces would not land at offset + their id (HF builds such a vocabulary anyway).
    n = cfg.get("offset", 103)
    if type(n) is not int or n < 4:
        raise LmatlasError(f"offset in tokenizer_config.json must be a whole number >= 4, not {n!r}")
    return n


def _pegasus_mask_sent(cfg: dict) -> str | None:
    # The token that stands for a masked sentence (the masked word's is mask_token).
    return _content(cfg.get("mask_token_sent", "<mask_1>"))


def _pegasus_vocab(spm: SpmModel, cfg: dict) -> list[tuple[str, float]]:
    # The .model has <pad> </s> <unk> at 0-2: <pad> and </s> keep their ids, the other pieces move
    # up by the offset, so that <unk> is at offset + 2. The placeholders score -100 as in HF's
    # converter (being special tokens, they are matched before the model sees the text anyway).
    offset, sent = _pegasus_offset(cfg), _pegasus_mask_sent(cfg)
    head = [_content(cfg.get(attr, _PEGASUS_SPECIALS[attr])) for attr in ("pad_token", "eos_token")]
    if None in head:
        raise LmatlasError("Pegasus' vocabulary starts with its pad and eos tokens; tokenizer_config.json nulls one")
    if sent is not None:
        head.append(sent)
        # HF's converter puts the mask token here only after mask_token_sent (otherwise its id is
        # past the offset and it is left out).
        mask = _content(cfg.get("mask_token", _PEGASUS_SPECIALS["mask_token"]))
        if mask is not None:
            head.append(mask)
    placeholders = [(f"<unk_{i}>", -100.0) for i in range(2, offset)]
    return [(t, 0.0) for t in head] + placeholders + [(p, s) for p, s, _ in spm.pieces[2:]]


def _pegasus_extra(cfg: dict) -> list:
    # The additional special tokens PegasusTokenizer always has: mask_token_sent first, then
    # the placeholders, numbered on from the given tokens up to <unk_{offset - 2}> (or, with none
    # given, <unk_2> ... <unk_{offset - 1}>).
    offset, sent = _pegasus_offset(cfg), _pegasus_mask_sent(cfg)
    given = cfg.get("additional_special_tokens")
    if given is None:
        return ([sent] if sent is not None else []) + [f"<unk_{i}>" for i in range(2, offset)]
    if not isinstance(given, list):
        raise LmatlasError(f"additional_special_tokens in tokenizer_config.json is not a list: {given!r}")
    tokens = list(given)
    if sent is not None and sent not in [_content(t) for t in tokens]:
        tokens.insert(0, sent)
    tokens += [f"<unk_{i}>" for i in range(len(tokens), offset - 1)]
    contents = [_content(t) for t in tokens]
    if len(set(contents)) != len(contents):
        raise LmatlasError(
            f"additional_special_tokens in tokenizer_config.json, with mask_token_sent and the <unk_N> placeholders "
            f"added, name a token twice: {contents}"
        )
    return tokens


def _albert_vocab(spm: SpmModel, cfg: dict) -> list[tuple[str, float]]:
    # Pieces like "1," are pushed down so that "1,000" splits as "1" "," "000", as the original
    # ALBERT preprocessing did.
    def penalised(piece: str) -> bool:
        return len(piece) >= 2 and piece[-1] == "," and piece[-2].isdigit()

    return [(p, s - 100 if penalised(p) else s) for p, s, _ in spm.pieces]


def _fairseq_vocab(spm: SpmModel, cfg: dict) -> list[tuple[str, float]]:
    # fairseq's dictionary put <s> <pad> </s> <unk> first and kept SentencePiece's own pieces
    # after them, shifted by one (the .model has <unk> <s> </s> at 0-2); <mask> comes last.
    head = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    return head + [(p, s) for p, s, _ in spm.pieces[3:]] + [("<mask>", 0.0)]


def _albert_normalizer(spm: SpmModel, cfg: dict):
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not cfg.get("keep_accents", False):
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if cfg.get("do_lower_case", True):
        steps.append(normalizers.Lowercase())
    if spm.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spm.precompiled_charsmap))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(steps)


def _spm_normalizer(spm: SpmModel, cfg: dict):
    steps = [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "▁")]
    if spm.precompiled_charsmap:
        steps.insert(0, normalizers.Precompiled(spm.precompiled_charsmap))
    return normalizers.Sequence(steps)


_BERT_SPECIALS = {
    "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
}  # fmt: skip
_ROBERTA_SPECIALS = {
    "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
    "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
}  # fmt: skip
_WITH_TYPES = ("input_ids", "token_type_ids", "attention_mask")
_LSTRIP = {"lstrip": True, "rstrip": False, "normalized": False}

_BERT = Family("wordpiece", _BERT_SPECIALS, _WITH_TYPES, clean_up=True, bert_options=True, template=_bert_template)
_ROBERTA = Family(
    "bytelevel", _ROBERTA_SPECIALS, mask_flags=_LSTRIP, specials_normalized=True, roberta_options=True,
    template=_roberta_template,
)  # fmt: skip

FAMILIES: dict[str, Family] = {
    "bert": _BERT,
    "electra": _BERT,
    "distilbert": Family(
        "wordpiece", _BERT_SPECIALS, clean_up=True, bert_options=True, template=_bert_template
    ),
    "mpnet": Family(
        "wordpiece", {**_ROBERTA_SPECIALS, "unk_token": "[UNK]"}, clean_up=True, mask_flags=_LSTRIP,
        bert_options=True, template=_mpnet_template,
    ),
    "gpt2": Family(
        "bytelevel", {k: "<|endoftext|>" for k in ("bos_token", "eos_token", "unk_token")},
        specials_normalized=True, template=_gpt2_template,
    ),
    "roberta": _ROBERTA,
    # BART's mask token matches the normalized text; there is no normalizer, so only the flag differs.
    "bart": dataclasses.replace(_ROBERTA, mask_flags={**_LSTRIP, "normalized": True}),
    "albert": Family(
        "spm",
        {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]",
         "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]"},
        _WITH_TYPES, mask_flags=_LSTRIP, template=_bert_template,
        spm_vocab=_albert_vocab, spm_unk_id=lambda spm, cfg: spm.unk_id, spm_normalizer=_albert_normalizer,
    ),
    "xlm-roberta": Family(
        "spm", _ROBERTA_SPECIALS, mask_flags=_LSTRIP, template=_fairseq_template,
        spm_vocab=_fairseq_vocab, spm_unk_id=lambda spm, cfg: 3, spm_normalizer=_spm_normalizer,
    ),
    "t5": Family(
        "spm", {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}, template=_t5_template,
        spm_vocab=_t5_vocab, spm_unk_id=lambda spm, cfg: spm.unk_id, spm_normalizer=_spm_normalizer,
        extra_specials=_t5_extra_ids, legacy_option=True,
    ),
    "mbart": Family(
        "spm", _ROBERTA_SPECIALS, mask_flags=_LSTRIP, spm_vocab=_mbart_vocab(_MBART_LANGUAGES),
        spm_unk_id=lambda spm, cfg: 3, spm_normalizer=_spm_normalizer,
        extra_specials=_mbart_extra(_MBART_LANGUAGES), languages=_MBART_LANGUAGES,
        language_template=_mbart_language_template,
    ),
    "mbart50": Family(
        "spm", _ROBERTA_SPECIALS, mask_flags={**_LSTRIP, "normalized": True}, spm_vocab=_mbart_vocab(_MBART50_LANGUAGES),
        spm_unk_id=lambda spm, cfg: 3, spm_normalizer=_spm_normalizer,
        extra_specials=_mbart_extra(_MBART50_LANGUAGES), languages=_MBART50_LANGUAGES,
        language_template=_mbart50_language_template,
    ),
    "pegasus": Family(
        "spm", _PEGASUS_SPECIALS, template=_marian_template, spm_vocab=_pegasus_vocab,
        spm_unk_id=lambda spm, cfg: spm.unk_id + _pegasus_offset(cfg), spm_normalizer=_spm_normalizer,
        spm_split_whitespace=True, extra_specials=_pegasus_extra,
    ),
    "marian": Family(
        "marian", {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}, template=_marian_template,
        settings={"model_max_length": 512},
    ),
    # A tokenizer.json of a class lmatlas has no row for: HF's PreTrainedTokenizerFast defaults.
    "generic": Family(None, {}, _WITH_TYPES),
}  # fmt: skip

# HF tokenizer class (without "Fast") and config.json model_type -> family.
_CLASS_FAMILY = {
    "BertTokenizer": "bert", "ElectraTokenizer": "electra", "DistilBertTokenizer": "distilbert",
    "MPNetTokenizer": "mpnet", "GPT2Tokenizer": "gpt2", "RobertaTokenizer": "roberta",
    "BartTokenizer": "bart", "LongformerTokenizer": "roberta", "AlbertTokenizer": "albert",
    "XLMRobertaTokenizer": "xlm-roberta", "PreTrainedTokenizer": "generic", "T5Tokenizer": "t5",
    "MBartTokenizer": "mbart", "MBart50Tokenizer": "mbart50", "MarianTokenizer": "marian",
    "PegasusTokenizer": "pegasus",
}  # fmt: skip
_MODEL_TYPE_FAMILY = {
    "bert": "bert", "electra": "electra", "distilbert": "distilbert", "mpnet": "mpnet",
    "gpt2": "gpt2", "gpt_neo": "gpt2", "gptj": "gpt2", "opt": "gpt2", "roberta": "roberta",
    "bart": "bart", "longformer": "roberta", "albert": "albert", "xlm-roberta": "xlm-roberta",
    "t5": "t5", "mbart": "mbart", "marian": "marian", "pegasus": "pegasus", "pegasus_x": "pegasus",
    "bigbird_pegasus": "pegasus",
}  # fmt: skip
# Without any config, the files alone decide.
_FILES_FAMILY = {
    "vocab.txt": "bert", "vocab.json": "gpt2", "spiece.model": "albert", "sentencepiece.bpe.model": "xlm-roberta",
    "source.spm": "marian",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LmatlasError(f"cannot read {path}: {e}") from e


def _read_text(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:  # text mode, like HF: \r\n and \r end lines too
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise LmatlasError(f"cannot read {path}: {e}") from e


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _proto_fields(buf: bytes):
    """Yield ``(field_number, value)`` for each field of a serialized protobuf message.

    Protobuf's wire format is a flat run of (key, value) pairs: the key is a varint holding
    ``field_number << 3 | wire_type``; wire type 0 is a varint, 1 eight bytes, 2 a varint length
    followed by that many bytes (strings, bytes and nested messages), 5 four bytes. Values come
    back raw (int, or bytes for types 1, 2 and 5); callers know what each field means.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:  # 3 and 4 are the long-deprecated groups; nothing in a .model uses them
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("message ends in the middle of a field")
        yield number, value


def _int32(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value  # negative int32s are 10-byte varints


def read_sentencepiece_model(path: Path) -> SpmModel:
    """Read the fields lmatlas needs from a SentencePiece ``.model`` (a serialized ModelProto).

    ModelProto: 1 pieces (repeated SentencePiece: 1 piece, 2 score (float), 3 type), 2 trainer_spec
    (3 model_type, 40 unk_id, 45 unk_piece), 3 normalizer_spec (2 precompiled_charsmap,
    3 add_dummy_prefix, 4 remove_extra_whitespaces). Absent fields take the .proto defaults.
    """
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise LmatlasError(f"cannot read {path}: {e}") from e
    pieces: list[tuple[str, float, int]] = []
    trainer = {3: 1, 40: 0, 45: b"<unk>"}
    norm = {2: b"", 3: 1, 4: 1}
    try:
        for number, value in _proto_fields(buf):
            if number == 1:
                piece = {1: b"", 2: b"\0\0\0\0", 3: _SPM_NORMAL}
                piece.update(_proto_fields(value))
                pieces.append((piece[1].decode("utf-8"), struct.unpack("<f", piece[2])[0], piece[3]))
            elif number == 2:
                trainer.update((n, v) for n, v in _proto_fields(value) if n in trainer)
            elif number == 3:
                norm.update((n, v) for n, v in _proto_fields(value) if n in norm)
        model = SpmModel(
            pieces=pieces,
            model_type=trainer[3],
            unk_id=_int32(trainer[40]),
            unk_piece=trainer[45].decode("utf-8"),
            precompiled_charsmap=bytes(norm[2]),
            add_dummy_prefix=bool(norm[3]),
            remove_extra_whitespaces=bool(norm[4]),
        )
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, struct.error) as e:
        # Any of these means a field holds the wrong kind of value: the file is not a ModelProto.
        raise LmatlasError(f"{path} is not a valid SentencePiece model: {e}") from e
    if not pieces:
        raise LmatlasError(f"{path} is not a valid SentencePiece model: it has no pieces")
    return model


def _bpe_merges_by_score(vocab: dict[str, int], scored: list[tuple[str, float]]) -> list[tuple[str, str]]:
    """Merges for a SentencePiece BPE model, which stores only pieces and scores.

    Every way to split a piece into two known pieces is a merge; higher-scored pieces merge
    first (ties: shorter left part, then shorter right part; within one piece, by the ids of
    the parts). This is the order HF's converter derives.
    """
    merges = []
    for piece, score in dict(scored).items():
        splits = [(piece[:i], piece[i:]) for i in range(1, len(piece))]
        splits = [(left, right) for left, right in splits if left in vocab and right in vocab]
        splits.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges += [(left, right, score) for left, right in splits]
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


# ---------------------------------------------------------------------------------------------
# Building the backend from the original files
# ---------------------------------------------------------------------------------------------


def _build_wordpiece(path: Path, cfg: dict, specials: dict) -> RustTokenizer:
    lines = _read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last token; it does not start another
    vocab: dict[str, int] = {}
    for index, line in enumerate(lines):
        vocab[line] = index  # a repeated line keeps its last index, as in HF
    if not vocab:
        raise LmatlasError(f"{path} is empty")
    tok = RustTokenizer(models.WordPiece(vocab, unk_token=str(specials.get("unk_token"))))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=cfg.get("tokenize_chinese_chars", True),
        strip_accents=cfg.get("strip_accents"),
        lowercase=cfg.get("do_lower_case", True),
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _build_bytelevel(vocab_path: Path, merges_path: Path, cfg: dict) -> RustTokenizer:
    if not merges_path.is_file():
        raise LmatlasError(f"{vocab_path.parent} has vocab.json but no merges.txt, which a byte-level BPE needs")
    vocab = _read_json(vocab_path)
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise LmatlasError(f"{vocab_path} is not a JSON object of token -> id")
    # Like HF: the first line (#version) and the last (empty after the final newline) are skipped;
    # a repeated merge keeps its first rank.
    merges = {}
    for n, line in enumerate(_read_text(merges_path).split("\n")[1:-1], start=2):
        pair = tuple(line.split())
        if len(pair) != 2:
            raise LmatlasError(f"line {n} of {merges_path} is not a pair of tokens: {line!r}")
        merges.setdefault(pair, len(merges))
    bpe = models.BPE(vocab, list(merges), continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    tok = RustTokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=cfg.get("add_prefix_space", False))
    tok.decoder = decoders.ByteLevel()
    return tok


def _build_spm(path: Path, family: Family, cfg: dict) -> RustTokenizer:
    spm = read_sentencepiece_model(path)
    vocab = family.spm_vocab(spm, cfg)
    if spm.model_type == 1:
        model = models.Unigram(vocab, unk_id=family.spm_unk_id(spm, cfg), byte_fallback=False)
    elif spm.model_type == 2:
        original = {piece: i for i, (piece, _, _) in enumerate(spm.pieces)}
        model = models.BPE(
            {piece: i for i, (piece, _) in enumerate(vocab)},
            _bpe_merges_by_score(original, vocab),
            unk_token=spm.unk_piece,
            fuse_unk=True,
            byte_fallback=False,
            dropout=None,
        )
    else:
        raise LmatlasError(f"{path} is a SentencePiece word or char model; only unigram and BPE are supported")
    tok = RustTokenizer(model)
    tok.normalizer = family.spm_normalizer(spm, cfg)
    prepend = "first" if family.legacy_option and cfg.get("legacy", True) is False else "always"
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend)
    if family.spm_split_whitespace:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), metaspace])
    else:
        tok.pre_tokenizer = metaspace
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend)
    # Control and user-defined pieces are matched before the model sees the text; only control
    # pieces count as special (skipped by decode(skip_special_tokens=True)).
    kept = [(p, t) for p, _, t in spm.pieces if t in (_SPM_CONTROL, _SPM_USER_DEFINED)]
    tok.add_tokens([AddedToken(p, normalized=False, special=t == _SPM_CONTROL) for p, t in kept])
    return tok


class _PieceSegmenter:
    """Marian's segmentation, as transformers' MarianTokenizer does it: special tokens are split
    out of the text, a leading ``>>lang<<`` code is kept whole, and the rest is cut into pieces
    by the ``sentencepiece`` library with the given model (source or target)."""

    def __init__(self, path: Path, specials: list[str]):
        import sentencepiece

        spm = read_sentencepiece_model(path)  # a clear error for a file that is not a model
        if spm.model_type not in (1, 2):
            raise LmatlasError(f"{path} is a SentencePiece word or char model; only unigram and BPE are supported")
        self.path = path
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        ordered = sorted(set(specials), key=len, reverse=True)  # the longest special token wins
        self.split = re.compile("(" + "|".join(re.escape(t) for t in ordered) + ")") if ordered else None
        self.specials = set(specials)

    def __call__(self, text: str) -> list[str]:
        words: list[str] = []
        for part in self.split.split(text) if self.split else [text]:
            if not part:
                continue
            if part in self.specials:
                words.append(part)
                continue
            if part.startswith(">>") and (end := part.find("<<")) != -1:
                words.append(part[: end + 2])
                part = part[end + 2 :]
            words += self.sp.encode(part, out_type=str)
        return words

    def decode_pieces(self, pieces: list[str]) -> str:
        return self.sp.decode_pieces(pieces)


def _build_marian(folder: Path, cfg: dict, specials: dict, target: bool = False):
    """A word-level backend over Marian's ``vocab.json`` (or ``target_vocab.json`` for targets
    with separate vocabularies) and the segmenter of its source or target SentencePiece model."""
    separate = bool(cfg.get("separate_vocabs", False))
    vocab_file = folder / ("target_vocab.json" if target and separate else "vocab.json")
    spm_file = folder / ("target.spm" if target else "source.spm")
    for f in (vocab_file, spm_file):
        if not f.is_file():
            raise LmatlasError(f"{folder} has source.spm but no {f.name}, which a Marian tokenizer needs")
    vocab = _read_json(vocab_file)
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise LmatlasError(f"{vocab_file} is not a JSON object of token -> id")
    unk = specials.get("unk_token")
    if unk not in vocab:
        raise LmatlasError(f"{vocab_file} has no {unk} token, which Marian needs for unknown pieces")
    tok = RustTokenizer(models.WordLevel(vocab, unk_token=unk))
    named = [t for t in specials.values() if t]
    extra = [_content(t) for t in cfg.get("additional_special_tokens") or []]
    return tok, _PieceSegmenter(spm_file, named + extra)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _as_added_token(value: Any, **defaults) -> AddedToken:
    """A special token from a config: a plain string, or HF's serialized AddedToken dict."""
    if isinstance(value, dict):
        flags = {k: value[k] for k in ("single_word", "lstrip", "rstrip", "normalized") if k in value}
        return AddedToken(value["content"], **{**defaults, **flags, "special": True})
    return AddedToken(value, **defaults, special=True)


def _content(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise LmatlasError(f"a special token in the tokenizer config is neither a string nor a token: {value!r}")


def _read_configs(folder: Path) -> tuple[dict, dict]:
    """tokenizer_config.json with special_tokens_map.json folded in, and config.json."""
    cfg = {}
    if (folder / "tokenizer_config.json").is_file():
        cfg = _read_json(folder / "tokenizer_config.json")
        if not isinstance(cfg, dict):
            raise LmatlasError(f"{folder / 'tokenizer_config.json'} is not a JSON object")
    # HF lets special_tokens_map.json override the config, unless the config lists its added
    # tokens itself (then the map is ignored).
    if (folder / "special_tokens_map.json").is_file() and "added_tokens_decoder" not in cfg:
        extra = _read_json(folder / "special_tokens_map.json")
        if not isinstance(extra, dict):
            raise LmatlasError(f"{folder / 'special_tokens_map.json'} is not a JSON object")
        # The named special tokens replace the config's; additional_special_tokens add up.
        own = list(cfg.get("additional_special_tokens") or [])
        cfg = {**cfg, **extra}
        if own:
            cfg["additional_special_tokens"] = own + [t for t in extra.get("additional_special_tokens") or [] if t not in own]
    model_cfg = {}
    if (folder / "config.json").is_file():
        model_cfg = _read_json(folder / "config.json")
        if not isinstance(model_cfg, dict):
            raise LmatlasError(f"{folder / 'config.json'} is not a JSON object")
    return cfg, model_cfg


def _pick_family(cfg: dict, model_cfg: dict, source: str) -> tuple[str, Family]:
    """The family's row, and the name that chose it: the tokenizer class (tokenizer_config.json,
    then config.json), else config.json's model_type, else the vocabulary file itself."""
    cls = cfg.get("tokenizer_class") or model_cfg.get("tokenizer_class")
    if cls:
        if not isinstance(cls, str):
            raise LmatlasError(f"tokenizer_class in tokenizer_config.json or config.json is not a name: {cls!r}")
        name = _CLASS_FAMILY.get(cls.removesuffix("Fast"))
        if name is None and source != "tokenizer.json":
            raise LmatlasError(f"tokenizer class {cls} can only be loaded from a tokenizer.json")
        return cls, FAMILIES[name or "generic"]
    model_type = model_cfg.get("model_type")
    if model_type in _MODEL_TYPE_FAMILY:
        return f"model type {model_type}", FAMILIES[_MODEL_TYPE_FAMILY[model_type]]
    name = _FILES_FAMILY.get(source, "generic")
    return name, FAMILIES[name]


def _apply_class_options(data: dict, family: Family, cfg: dict) -> None:
    """Edit a tokenizer.json the way HF's tokenizer classes do when they load one."""
    data["truncation"] = data["padding"] = None  # HF decides these per call, never from the file
    norm = data.get("normalizer") or {}
    if family.bert_options:
        wanted = {
            "lowercase": cfg.get("do_lower_case", True),
            "strip_accents": cfg.get("strip_accents"),
            "handle_chinese_chars": cfg.get("tokenize_chinese_chars", True),
        }
        if any(key in norm and norm[key] != value for key, value in wanted.items()):
            norm.update(wanted)
    post = data.get("post_processor") or {}
    if family.roberta_options:
        for key, default in (("add_prefix_space", False), ("trim_offsets", True)):
            if key in post:
                post[key] = cfg.get(key, default)
    pre = data.get("pre_tokenizer") or {}
    if "add_prefix_space" in pre:
        pre["add_prefix_space"] = cfg.get("add_prefix_space", False)


# The files a tokenizer can be loaded from, in order of preference, and the kind of each.
_SOURCES = (
    ("tokenizer.json", "json"),
    ("source.spm", "marian"),
    ("vocab.txt", "wordpiece"),
    ("vocab.json", "bytelevel"),
    ("spiece.model", "spm"),
    ("sentencepiece.bpe.model", "spm"),
)
_KIND_FILES = {
    "wordpiece": "vocab.txt", "bytelevel": "vocab.json + merges.txt", "spm": "a SentencePiece .model",
    "marian": "source.spm + target.spm + vocab.json",
}  # fmt: skip


def load_tokenizer(folder: str | os.PathLike) -> "Tokenizer":
    """Load the tokenizer of a checkpoint folder or hub id (see the module docstring)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise LmatlasError(f"tokenizer folder {folder} is not a folder")
    folder = resolve(folder, weights=False)
    source = next((name for name, _ in _SOURCES if (folder / name).is_file()), None)
    if source is None:
        names = ", ".join(name for name, _ in _SOURCES)
        raise LmatlasError(f"{folder} has no tokenizer files (looked for {names})")
    kind = dict(_SOURCES)[source]
    path = folder / source
    cfg, model_cfg = _read_configs(folder)
    family_name, family = _pick_family(cfg, model_cfg, source)
    if family.extra_specials is not None:
        cfg = {**cfg, "additional_special_tokens": family.extra_specials(cfg)}
    specials = {attr: _content(cfg.get(attr, family.specials.get(attr))) for attr in SPECIAL_ATTRS}
    segmenter = target = None

    if kind == "json":
        data = _read_json(path)
        if not isinstance(data, dict) or "model" not in data:
            raise LmatlasError(f"{path} is not a tokenizers JSON file (it has no model)")
        _apply_class_options(data, family, cfg)
        try:
            backend = RustTokenizer.from_str(json.dumps(data))
        except Exception as e:  # the Rust parser raises a bare Exception
            raise LmatlasError(f"cannot parse {path}: {e}") from e
    elif family.files != kind:
        needs = _KIND_FILES.get(family.files, "a tokenizer.json")
        raise LmatlasError(f"{folder} has {source}, but its config asks for {family_name}, which needs {needs}")
    elif kind == "wordpiece":
        backend = _build_wordpiece(path, cfg, specials)
    elif kind == "bytelevel":
        backend = _build_bytelevel(path, folder / "merges.txt", cfg)
    elif kind == "marian":
        backend, segmenter = _build_marian(folder, cfg, specials)
        target = _build_marian(folder, cfg, specials, target=True)
    else:
        backend = _build_spm(path, family, cfg)

    from_files = kind != "json"
    backends = [backend] + ([target[0]] if target else [])
    for b in backends:
        _add_special_tokens(b, cfg, family, from_files)
        if from_files and family.template is not None:
            b.post_processor = family.template(cfg, _Ids(specials, b, str(folder)))
    languages = None
    if family.language_template is not None:
        languages = _Languages(family, _Ids(specials, backend, str(folder)), cfg)
        backend.post_processor = languages.template(languages.src_lang)

    settings = {**family.settings, **_settings(cfg, folder)}
    common = dict(
        specials=specials,
        additional_special_tokens=[_content(t) for t in cfg.get("additional_special_tokens") or []],
        model_input_names=settings.get("model_input_names", family.input_names),
        # HF's slow classes of some families clean up decoded text by default; from a
        # tokenizer.json only the config turns it on.
        clean_up_tokenization_spaces=settings.get("clean_up_tokenization_spaces", from_files and family.clean_up),
        **{k: v for k, v in settings.items() if k not in ("model_input_names", "clean_up_tokenization_spaces")},
        name_or_path=str(folder),
    )
    tokenizer = Tokenizer(backend, segmenter=segmenter, languages=languages, **common)
    tokenizer.chat_template = read_chat_template(folder, cfg)
    if target is not None:
        # Marian's targets: the target SentencePiece model (and vocabulary, if separate); its
        # outputs decode with them too.
        tokenizer._target = Tokenizer(target[0], segmenter=target[1], **common)
        tokenizer._target._target = tokenizer._target
    return tokenizer


class _Languages:
    """mBART's language codes: ``src_lang`` goes around each text, ``tgt_lang`` around targets."""

    def __init__(self, family: Family, ids: _Ids, cfg: dict):
        self.family, self.ids = family, ids
        self.codes = family.languages
        self.src_lang = self.check(cfg.get("src_lang") or "en_XX", "src_lang")
        self.tgt_lang = cfg.get("tgt_lang")
        if self.tgt_lang is not None:
            self.check(self.tgt_lang, "tgt_lang")

    def check(self, code: str, name: str) -> str:
        if code not in self.codes and self.ids._backend.token_to_id(code) is None:
            raise LmatlasError(f"{name} {code!r} is not one of the language codes: {', '.join(self.codes)}")
        return code

    def template(self, code: str):
        return self.family.language_template(code, self.ids)


def _settings(cfg: dict, folder: Path) -> dict:
    """The Tokenizer settings tokenizer_config.json gives, checked."""
    out: dict[str, Any] = {}
    where = folder / "tokenizer_config.json"
    if cfg.get("model_max_length") is not None:
        if not isinstance(cfg["model_max_length"], (int, float)) or cfg["model_max_length"] < 0:
            raise LmatlasError(f"model_max_length in {where} is not a non-negative number")
        out["model_max_length"] = int(cfg["model_max_length"])
    for key in ("padding_side", "truncation_side"):
        if key in cfg:
            if cfg[key] not in ("right", "left"):
                raise LmatlasError(f"{key} in {where} must be 'right' or 'left', not {cfg[key]!r}")
            out[key] = cfg[key]
    if cfg.get("model_input_names"):
        names = cfg["model_input_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise LmatlasError(f"model_input_names in {where} is not a list of names")
        out["model_input_names"] = names
    if "clean_up_tokenization_spaces" in cfg:
        out["clean_up_tokenization_spaces"] = bool(cfg["clean_up_tokenization_spaces"])
    return out


def _add_special_tokens(backend, cfg, family, from_files: bool) -> None:
    """Register the config's added tokens and every special token with the backend.

    Tokens already in the vocabulary keep their ids (the backend only updates their flags); new
    ones get the next ids, in HF's order: the config's added_tokens_decoder by id, then the
    special tokens in SPECIAL_ATTRS order, then additional_special_tokens. A tokenizer.json
    already lists its special tokens, so only missing ones are added; built from the original
    files, every special token is (re-)registered with the family's flags, as HF does.
    """
    present = {repr(t) for t in backend.get_added_tokens_decoder().values()}
    to_add: list[AddedToken] = []
    decoder = cfg.get("added_tokens_decoder") or {}
    try:
        for _, value in sorted(decoder.items(), key=lambda kv: int(kv[0])):
            token = AddedToken(value["content"], **{k: v for k, v in value.items() if k in _ADDED_TOKEN_FLAGS})
            if repr(token) not in present:
                to_add.append(token)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise LmatlasError(f"added_tokens_decoder in tokenizer_config.json is malformed: {e}") from e
    seen = {t.content for t in to_add}
    if not from_files:
        seen |= {t.content for t in backend.get_added_tokens_decoder().values()}
    raw = [(attr, cfg.get(attr, family.specials.get(attr))) for attr in SPECIAL_ATTRS]
    raw += [("additional_special_tokens", t) for t in cfg.get("additional_special_tokens") or []]
    for attr, value in raw:
        content = _content(value)
        if content is None or content in seen:
            continue
        seen.add(content)
        if attr == "mask_token" and family.mask_flags:
            defaults = family.mask_flags
        else:
            defaults = {"normalized": from_files and family.specials_normalized}
        to_add.append(_as_added_token(value, **defaults))
    if to_add:
        backend.add_tokens(to_add)


_ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


# ---------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------


class BatchEncoding(dict):
    """The result of calling a tokenizer: a dict (``input_ids``, ``attention_mask``, ...) that
    also allows attribute access, plus the ``tokenizers`` Encoding of each row (``encodings``)
    for offsets, word ids and sequence ids."""

    def __init__(self, data: dict, encodings: list | None = None):
        super().__init__(data)
        self.encodings = encodings

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def _encoding(self, index: int):
        if not self.encodings:
            raise LmatlasError("this result has no encodings to look into")
        return self.encodings[index]

    def tokens(self, index: int = 0) -> list[str]:
        return self._encoding(index).tokens

    def word_ids(self, index: int = 0) -> list[int | None]:
        return self._encoding(index).word_ids

    def sequence_ids(self, index: int = 0) -> list[int | None]:
        return self._encoding(index).sequence_ids

    def to(self, device) -> "BatchEncoding":
        """Move every tensor to ``device`` (for ``return_tensors="pt"``); returns self."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self


_PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: None, "do_not_pad": None}
_TRUNCATION = {
    True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
    "only_second": "only_second", False: None, None: None, "do_not_truncate": None,
}  # fmt: skip
# The word-joining artefacts HF removes from decoded text when clean_up_tokenization_spaces is on,
# applied in this order.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip


def _option(table: dict, value: Any, name: str):
    try:
        return table[value]
    except (KeyError, TypeError):
        choices = ", ".join(repr(k) for k in table)
        raise LmatlasError(f"{name}={value!r} is not one of {choices}") from None


def _special_token(attr: str) -> tuple[property, property]:
    """The ``x_token`` (settable) and ``x_token_id`` properties of one special token."""

    def get_id(self) -> int | None:
        token = self._specials[attr]
        return None if token is None else self.convert_tokens_to_ids(token)

    def set_token(self, value: str | None) -> None:
        # Like HF: naming a token (e.g. pad_token = eos_token for GPT-2) does not add it to the
        # vocabulary; its id is whatever the vocabulary says.
        if value is not None and not isinstance(value, str):
            raise LmatlasError(f"{attr} must be a string or None, not {type(value).__name__}")
        self._specials[attr] = value

    return property(lambda self: self._specials[attr], set_token), property(get_id)


class Tokenizer:
    """A loaded tokenizer with the interface of a Hugging Face fast tokenizer.

    Build one with ``load_tokenizer``. The ``tokenizers`` pipeline is ``backend_tokenizer``;
    truncation and padding are set on it for each call only.
    """

    def __init__(
        self,
        backend: RustTokenizer,
        *,
        specials: dict[str, str | None],
        additional_special_tokens: Sequence[str] = (),
        model_input_names: Sequence[str] = ("input_ids", "attention_mask"),
        model_max_length: int = VERY_LARGE_INTEGER,
        padding_side: str = "right",
        truncation_side: str = "right",
        clean_up_tokenization_spaces: bool = False,
        name_or_path: str = "",
        segmenter: _PieceSegmenter | None = None,
        languages: _Languages | None = None,
    ):
        self._backend = backend
        # Marian: texts are cut into pieces by sentencepiece first; ``_target`` encodes targets
        # (``text_target``) and decodes model outputs.
        self._segmenter = segmenter
        self._target: Tokenizer | None = None
        self._languages = languages
        self._specials = {attr: specials.get(attr) for attr in SPECIAL_ATTRS}
        self.additional_special_tokens = list(additional_special_tokens)
        self.model_input_names = list(model_input_names)
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.pad_token_type_id = 0
        self.name_or_path = name_or_path
        # The Jinja template chats are formatted with (several, by name, as a dict), as HF's
        # attribute: load_tokenizer reads the folder's, and it may be set by hand.
        self.chat_template: str | dict[str, str] | None = None

    # -- settings ---------------------------------------------------------------------------

    @property
    def padding_side(self) -> str:
        return self._padding_side

    @padding_side.setter
    def padding_side(self, value: str) -> None:
        if value not in ("right", "left"):
            raise LmatlasError(f"padding_side must be 'right' or 'left', not {value!r}")
        self._padding_side = value

    @property
    def truncation_side(self) -> str:
        return self._truncation_side

    @truncation_side.setter
    def truncation_side(self, value: str) -> None:
        if value not in ("right", "left"):
            raise LmatlasError(f"truncation_side must be 'right' or 'left', not {value!r}")
        self._truncation_side = value

    @property
    def backend_tokenizer(self) -> RustTokenizer:
        return self._backend

    # -- languages (mBART) -------------------------------------------------------------------

    @property
    def src_lang(self) -> str | None:
        return self._languages.src_lang if self._languages else None

    @src_lang.setter
    def src_lang(self, code: str) -> None:
        if self._languages is None:
            raise LmatlasError("this tokenizer has no language codes (src_lang is for mBART)")
        self._languages.src_lang = self._languages.check(code, "src_lang")
        self._backend.post_processor = self._languages.template(code)

    @property
    def tgt_lang(self) -> str | None:
        return self._languages.tgt_lang if self._languages else None

    @tgt_lang.setter
    def tgt_lang(self, code: str) -> None:
        if self._languages is None:
            raise LmatlasError("this tokenizer has no language codes (tgt_lang is for mBART)")
        self._languages.tgt_lang = self._languages.check(code, "tgt_lang")

    @property
    def language_layout(self) -> str | None:
        """Where the language code goes: "prefix" (mBART-50: before the text; a translation
        starts with the target code, forced as its first token), "suffix" (mBART: after </s>;
        a translation's decoder starts from the target code), or None (no language codes)."""
        if self._languages is None:
            return None
        return "prefix" if self._languages.family.language_template is _mbart50_language_template else "suffix"

    @property
    def lang_code_to_id(self) -> dict[str, int]:
        """mBART's language codes and their ids (for ``forced_bos_token_id``)."""
        if self._languages is None:
            return {}
        return {code: self._backend.token_to_id(code) for code in self._languages.codes}

    # -- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, added tokens included (HF's ``len(tokenizer)``)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        """Ids of tokens; a token outside the vocabulary gives the unk id (None without one)."""
        if isinstance(tokens, str):
            token_id = self._backend.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False):
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(int(i)) for i in ids if int(i) not in skip]

    # -- special tokens ---------------------------------------------------------------------

    bos_token, bos_token_id = _special_token("bos_token")
    eos_token, eos_token_id = _special_token("eos_token")
    unk_token, unk_token_id = _special_token("unk_token")
    sep_token, sep_token_id = _special_token("sep_token")
    pad_token, pad_token_id = _special_token("pad_token")
    cls_token, cls_token_id = _special_token("cls_token")
    mask_token, mask_token_id = _special_token("mask_token")

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {attr: tok for attr, tok in self._specials.items() if tok}
        if self.additional_special_tokens:
            out["additional_special_tokens"] = list(self.additional_special_tokens)
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [t for t in self._specials.values() if t] + list(self.additional_special_tokens)
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._backend.num_special_tokens_to_add(pair)

    # -- encoding ---------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        text_pair: str | Sequence[str] | None = None,
        *,
        text_target: str | Sequence[str] | None = None,
        **kwargs,
    ) -> BatchEncoding:
        """Encode texts (see ``encode_texts``); ``text_target`` encodes what an encoder-decoder
        should produce, as transformers does: with Marian's target model, with mBART's target
        language; given with ``text``, its ids come back as ``labels``."""
        if text_target is None:
            if text is None:
                raise LmatlasError("text must be a string or a list of strings (or give text_target)")
            return self.encode_texts(text, text_pair, **kwargs)
        target = self._encode_target(text_target, **kwargs)
        if text is None:
            return target
        out = self.encode_texts(text, text_pair, **kwargs)
        out["labels"] = target["input_ids"]
        return out

    def _encode_target(self, text, **kwargs) -> BatchEncoding:
        if self._target is not None:
            return self._target.encode_texts(text, **kwargs)
        if self._languages is not None:
            if self._languages.tgt_lang is None:
                raise LmatlasError("text_target needs the target language: set tokenizer.tgt_lang (e.g. 'ro_RO') first")
            before = self._backend.post_processor
            self._backend.post_processor = self._languages.template(self._languages.tgt_lang)
            try:
                return self.encode_texts(text, **kwargs)
            finally:
                self._backend.post_processor = before
        return self.encode_texts(text, **kwargs)

    def encode_texts(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
    ) -> BatchEncoding:
        """Encode one text (or pair), or a batch of them, as HF fast tokenizers do.

        A single string gives unbatched lists (unless ``return_tensors`` or overflowing tokens
        ask for a batch). ``truncation=None`` (the default) truncates only if ``max_length`` is
        given without padding, as in HF.
        """
        batched = not isinstance(text, str)
        if batched:
            if not isinstance(text, (list, tuple)) or not all(isinstance(t, str) for t in text):
                raise LmatlasError("text must be a string or a list of strings")
            if not text:
                raise LmatlasError("text is an empty list; give at least one string")
            if text_pair is None:
                inputs = list(text)
            else:
                if isinstance(text_pair, str) or len(text_pair) != len(text):
                    raise LmatlasError("text_pair must be a list of strings as long as text")
                if not all(isinstance(t, str) for t in text_pair):
                    raise LmatlasError("text_pair must be a list of strings as long as text")
                inputs = list(zip(text, text_pair))
        else:
            if text_pair is not None and not isinstance(text_pair, str):
                raise LmatlasError("text_pair must be a string when text is a string")
            # An empty pair counts as no pair, as in HF.
            inputs = [(text, text_pair) if text_pair else text]
        if return_tensors not in (None, "pt", "np"):
            raise LmatlasError(f"return_tensors={return_tensors!r} is not one of None, 'pt', 'np'")
        if return_offsets_mapping and self._segmenter is not None:
            raise LmatlasError("return_offsets_mapping is not available for Marian's tokenizer (nor in transformers)")

        encodings = self._encode_batch(
            inputs, add_special_tokens, padding, truncation, max_length, stride, pad_to_multiple_of, padding_side
        )
        rows = [[e, *e.overflowing] if return_overflowing_tokens else [e] for e in encodings]
        flat = [e for row in rows for e in row]
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        data: dict[str, list] = {"input_ids": [e.ids for e in flat]}
        if return_token_type_ids:
            data["token_type_ids"] = [e.type_ids for e in flat]
        if return_attention_mask:
            data["attention_mask"] = [e.attention_mask for e in flat]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [e.special_tokens_mask for e in flat]
        if return_offsets_mapping:
            data["offset_mapping"] = [e.offsets for e in flat]
        if return_length:
            data["length"] = [len(e.ids) for e in flat]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = [i for i, row in enumerate(rows) for _ in row]

        if return_tensors is not None:
            data = {key: _to_tensor(key, value, return_tensors) for key, value in data.items()}
        elif not batched and not return_overflowing_tokens:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, flat)

    def _encode_batch(self, inputs, add_special_tokens, padding, truncation, max_length, stride, multiple, side):
        pad = _option(_PADDING, padding, "padding")
        trunc = _option(_TRUNCATION, truncation, "truncation")
        if max_length is not None and (type(max_length) is not int or max_length < 1):
            raise LmatlasError(f"max_length must be a positive integer, not {max_length!r}")
        if not isinstance(stride, int) or stride < 0:
            raise LmatlasError(f"stride must be a non-negative integer, not {stride!r}")
        if multiple is not None and (not isinstance(multiple, int) or multiple < 1):
            raise LmatlasError(f"pad_to_multiple_of must be a positive integer, not {multiple!r}")
        if side not in (None, "right", "left"):
            raise LmatlasError(f"padding_side must be 'right' or 'left', not {side!r}")
        # HF: a max_length alone (no padding, truncation unspecified) means truncate to it.
        if max_length is not None and padding is False and truncation is None:
            trunc = "longest_first"
        # Without max_length, both fall back to model_max_length, or are dropped if it is unset.
        if max_length is None and (pad == "max_length" or trunc):
            if self.model_max_length > _LARGE_INTEGER:
                pad = None if pad == "max_length" else pad
                trunc = None
            else:
                max_length = self.model_max_length
        if pad and self.pad_token_id is None:
            raise LmatlasError(
                "padding needs a pad token, and this tokenizer has none (set tokenizer.pad_token, "
                "e.g. to tokenizer.eos_token)"
            )
        if trunc and pad and multiple and max_length % multiple:
            raise LmatlasError(f"max_length={max_length} is not a multiple of pad_to_multiple_of={multiple}")

        # The backend keeps truncation and padding as state: set both on every call so that
        # nothing carries over from one call to the next.
        backend = self._backend
        if trunc:
            backend.enable_truncation(max_length, stride=stride, strategy=trunc, direction=self.truncation_side)
        else:
            backend.no_truncation()
        if pad:
            backend.enable_padding(
                direction=side or self.padding_side,
                pad_id=self.pad_token_id,
                pad_type_id=self.pad_token_type_id,
                pad_token=self.pad_token,
                length=max_length if pad == "max_length" else None,
                pad_to_multiple_of=multiple,
            )
        else:
            backend.no_padding()
        try:
            if self._segmenter is not None:
                pieces = [
                    tuple(self._segmenter(t) for t in x) if isinstance(x, tuple) else self._segmenter(x)
                    for x in inputs
                ]
                return backend.encode_batch(pieces, is_pretokenized=True, add_special_tokens=add_special_tokens)
            return backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        except Exception as e:  # tokenizers reports truncation that cannot fit as a bare Exception
            raise LmatlasError(f"cannot encode the text with these settings: {e}") from e
        except BaseException as e:
            # A Rust panic (e.g. a stride too long for what truncation leaves) surfaces as
            # pyo3's PanicException, which is not an Exception; anything else passes through.
            if type(e).__name__ != "PanicException":
                raise
            raise LmatlasError(f"cannot encode the text with these settings: {str(e).splitlines()[0]}") from None

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        **kwargs,
    ) -> list[int]:
        """The ids of one text (or pair). Further keyword arguments go to ``__call__``."""
        if not isinstance(text, str):
            raise LmatlasError(f"encode takes one string, not {type(text).__name__} (call the tokenizer for batches)")
        kwargs.update(add_special_tokens=add_special_tokens, truncation=truncation, max_length=max_length)
        return self(text, text_pair, **kwargs)["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        return self(text, pair, add_special_tokens=add_special_tokens).tokens()

    # -- decoding ---------------------------------------------------------------------------

    def decode(
        self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Text of one sequence of ids (a list, a 1-d tensor or array, or a single id)."""
        return self.batch_decode([_id_list(ids)], skip_special_tokens, clean_up_tokenization_spaces)[0]

    def batch_decode(
        self, sequences, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        ids = [_id_list(s) for s in sequences]
        if self._segmenter is not None:
            texts = [self._target._decode_pieces(row, skip_special_tokens) for row in ids]
        else:
            texts = self._backend.decode_batch(ids, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            texts = [_clean_up(t) for t in texts]
        return texts

    def _decode_pieces(self, ids: list[int], skip_special_tokens: bool) -> str:
        """Marian: the pieces of ``ids`` joined by the (target) SentencePiece model, special
        tokens kept as they are, as transformers' MarianTokenizer decodes."""
        special = set(self.all_special_tokens)
        unk = self.unk_token
        out, run = "", []
        for i in ids:
            token = self._backend.id_to_token(i)
            token = unk if token is None else token
            if token in special:
                if skip_special_tokens:
                    continue
                out += self._segmenter.decode_pieces(run) + token + " "
                run = []
            else:
                run.append(token)
        out += self._segmenter.decode_pieces(run)
        return out.replace("\u2581", " ").strip()

    def __repr__(self) -> str:
        return f"Tokenizer({self.name_or_path!r}, vocab_size={self.vocab_size})"


def _clean_up(text: str) -> str:
    for old, new in _CLEAN_UP:
        text = text.replace(old, new)
    return text


def _id_list(ids) -> list[int]:
    if hasattr(ids, "tolist"):  # torch tensors and numpy arrays
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    try:
        return [int(i) for i in ids]
    except (TypeError, ValueError):
        raise LmatlasError("ids to decode must be a sequence of integers (use batch_decode for a batch)") from None


def _to_tensor(key: str, value: list, kind: str):
    if value and isinstance(value[0], list) and len({len(row) for row in value}) > 1:
        raise LmatlasError(
            f"the {key} rows have different lengths, so they cannot form a tensor; pass padding=True"
        )
    if kind == "pt":
        import torch

        return torch.tensor(value)
    import numpy as np

    return np.asarray(value)
