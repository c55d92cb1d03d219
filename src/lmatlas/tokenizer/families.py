"""The family table: what differs between model families' tokenizers (default special tokens, the
template around a sequence, how SentencePiece ids are laid out, ...), one row each, and which row
a checkpoint's tokenizer class, model type or vocabulary file picks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from tokenizers import Regex, normalizers, processors

from ..errors import LmatlasError
from .sentencepiece_model import SpmModel
from .special_tokens import SpecialIds, token_content


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
    template: Callable[[dict, SpecialIds], Any] | None = None
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
    # (``src_lang``) around each text, before it ("prefix") or after its </s> ("suffix").
    languages: tuple[str, ...] = ()
    language_layout: str | None = None
    # T5's ``legacy: false``: only the first word of a text gets the SentencePiece space marker
    # (the others keep what the text has), as HF's converter does for classes with that flag.
    legacy_option: bool = False
    # Settings the slow class defaults to when tokenizer_config.json says nothing (Marian: 512).
    settings: dict = dataclasses.field(default_factory=dict)


def _template(single: str, pair: str, *names: str):
    """The template around one text (``single``) and around a pair (``pair``), in the
    ``tokenizers`` notation, with the special tokens ``names`` written ``{cls}``, ``{sep}``, ..."""

    def template(cfg: dict, ids: SpecialIds):
        tokens = [getattr(ids, name) for name in names]  # (token, id) each
        text = {name: token for name, (token, _) in zip(names, tokens)}
        return processors.TemplateProcessing(
            single=[piece.format(**text) for piece in single.split()],
            pair=[piece.format(**text) for piece in pair.split()],
            special_tokens=tokens,
        )

    return template


# XLNet puts its special tokens last, <cls> in a segment of its own (type 2).
_xlnet_template = _template("$A:0 {sep}:0 {cls}:2", "$A:0 {sep}:0 $B:1 {sep}:1 {cls}:2", "sep", "cls")
_bert_template = _template("{cls}:0 $A:0 {sep}:0", "{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1", "cls", "sep")
# MPNet separates a pair with two separators, like RoBERTa, but keeps WordPiece.
_mpnet_template = _template("{cls}:0 $A:0 {sep}:0", "{cls}:0 $A:0 {sep}:0 {sep}:0 $B:1 {sep}:1", "cls", "sep")
# RoBERTa's layout with SentencePiece: every token type is 0, even in pairs.
_fairseq_template = _template("{cls} $A {sep}", "{cls} $A {sep} {sep} $B {sep}", "cls", "sep")
_t5_template = _template("$A {eos}", "$A {eos} $B {eos}", "eos")
_marian_template = _template("$A {eos}", "$A $B {eos}", "eos")
_opt_template = _template("{bos}:0 $A:0", "{bos}:0 $A:0 $B:1", "bos")


def _gpt2_template(cfg: dict, ids: SpecialIds):
    if cfg.get("add_bos_token", False):  # OPT: every sequence starts with </s> (its bos)
        return _opt_template(cfg, ids)
    # Adds nothing; kept because HF has it (it is what makes offsets byte-level aware).
    return processors.ByteLevel(trim_offsets=False)


def _roberta_template(cfg: dict, ids: SpecialIds):
    return processors.RobertaProcessing(
        sep=ids.sep,
        cls=ids.cls,
        add_prefix_space=cfg.get("add_prefix_space", False),
        trim_offsets=cfg.get("trim_offsets", True),
    )


def _t5_extra_ids(cfg: dict) -> list[str]:
    # T5's sentinels for span corruption, <extra_id_0> ... <extra_id_{extra_ids - 1}>, unless the
    # config already lists them among its additional special tokens.
    given = [token_content(t) for t in cfg.get("additional_special_tokens") or []]
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


def _mbart_extra(languages: tuple[str, ...]):
    def extra(cfg: dict) -> list[str]:
        given = [token_content(t) for t in cfg.get("additional_special_tokens") or []]
        return list(languages) + [t for t in given if t not in languages]

    return extra


def language_template(layout: str, code: str, ids: SpecialIds):
    """mBART's template around a text in language ``code``: "suffix" (mBART cc25) puts the code
    after the text's </s>, "prefix" (mBART-50) before the text."""
    eos, lang = ids.eos, (code, ids.token(code))
    if layout == "prefix":
        single, pair, specials = [code, "$A", eos[0]], [code, "$A", "$B", eos[0]], [lang, eos]
    else:
        single, pair, specials = ["$A", eos[0], code], ["$A", "$B", eos[0], code], [eos, lang]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


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
    return token_content(cfg.get("mask_token_sent", "<mask_1>"))


def _pegasus_vocab(spm: SpmModel, cfg: dict) -> list[tuple[str, float]]:
    # The .model has <pad> </s> <unk> at 0-2: <pad> and </s> keep their ids, the other pieces move
    # up by the offset, so that <unk> is at offset + 2. The placeholders score -100 as in HF's
    # converter (being special tokens, they are matched before the model sees the text anyway).
    offset, sent = _pegasus_offset(cfg), _pegasus_mask_sent(cfg)
    head = [token_content(cfg.get(attr, _PEGASUS_SPECIALS[attr])) for attr in ("pad_token", "eos_token")]
    if None in head:
        raise LmatlasError("Pegasus' vocabulary starts with its pad and eos tokens; tokenizer_config.json nulls one")
    if sent is not None:
        head.append(sent)
        # HF's converter puts the mask token here only after mask_token_sent (otherwise its id is
        # past the offset and it is left out).
        mask = token_content(cfg.get("mask_token", _PEGASUS_SPECIALS["mask_token"]))
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
    if sent is not None and sent not in [token_content(t) for t in tokens]:
        tokens.insert(0, sent)
    tokens += [f"<unk_{i}>" for i in range(len(tokens), offset - 1)]
    contents = [token_content(t) for t in tokens]
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


def _fairseq_vocab(languages: tuple[str, ...] = ()):
    # fairseq's dictionary put <s> <pad> </s> <unk> first and kept SentencePiece's own pieces
    # after them, shifted by one (the .model has <unk> <s> </s> at 0-2); then mBART's language
    # codes, and <mask> last.
    def vocab(spm: SpmModel, cfg: dict) -> list[tuple[str, float]]:
        head = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
        return head + [(p, s) for p, s, _ in spm.pieces[3:]] + [(c, 0.0) for c in languages] + [("<mask>", 0.0)]

    return vocab


def _albert_normalizer(spm: SpmModel, cfg: dict, lower_case: bool = True):
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not cfg.get("keep_accents", False):
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if cfg.get("do_lower_case", lower_case):
        steps.append(normalizers.Lowercase())
    if spm.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spm.precompiled_charsmap))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(steps)


def _xlnet_normalizer(spm: SpmModel, cfg: dict):
    return _albert_normalizer(spm, cfg, lower_case=False)  # ALBERT's, cased unless the config says


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

_ALBERT = Family(
    "spm",
    {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]",
     "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]"},
    _WITH_TYPES, mask_flags=_LSTRIP, template=_bert_template,
    spm_vocab=_albert_vocab, spm_unk_id=lambda spm, cfg: spm.unk_id, spm_normalizer=_albert_normalizer,
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
    "albert": _ALBERT,
    # XLNet: ALBERT's SentencePiece layout, cased, its special tokens last; padding on the left
    # (its heads read the last token), padded positions of token type 3.
    "xlnet": dataclasses.replace(
        _ALBERT,
        specials={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "<sep>",
                  "pad_token": "<pad>", "cls_token": "<cls>", "mask_token": "<mask>"},
        template=_xlnet_template, spm_normalizer=_xlnet_normalizer,
        extra_specials=lambda cfg: list(cfg.get("additional_special_tokens") or ["<eop>", "<eod>"]),
        settings={"padding_side": "left", "pad_token_type_id": 3},
    ),
    "xlm-roberta": Family(
        "spm", _ROBERTA_SPECIALS, mask_flags=_LSTRIP, template=_fairseq_template,
        spm_vocab=_fairseq_vocab(), spm_unk_id=lambda spm, cfg: 3, spm_normalizer=_spm_normalizer,
    ),
    "t5": Family(
        "spm", {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}, template=_t5_template,
        spm_vocab=_t5_vocab, spm_unk_id=lambda spm, cfg: spm.unk_id, spm_normalizer=_spm_normalizer,
        extra_specials=_t5_extra_ids, legacy_option=True,
    ),
    "mbart": Family(
        "spm", _ROBERTA_SPECIALS, mask_flags=_LSTRIP, spm_vocab=_fairseq_vocab(_MBART_LANGUAGES),
        spm_unk_id=lambda spm, cfg: 3, spm_normalizer=_spm_normalizer,
        extra_specials=_mbart_extra(_MBART_LANGUAGES), languages=_MBART_LANGUAGES,
        language_layout="suffix",
    ),
    "mbart50": Family(
        "spm", _ROBERTA_SPECIALS, mask_flags={**_LSTRIP, "normalized": True},
        spm_vocab=_fairseq_vocab(_MBART50_LANGUAGES), spm_unk_id=lambda spm, cfg: 3, spm_normalizer=_spm_normalizer,
        extra_specials=_mbart_extra(_MBART50_LANGUAGES), languages=_MBART50_LANGUAGES,
        language_layout="prefix",
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
    # Qwen2's byte-level BPE splits text with its own pattern after an NFC normalizer, which only
    # its tokenizer.json holds; <|endoftext|> stands for the unknown, end and pad tokens.
    "qwen2": Family(None, {k: "<|endoftext|>" for k in ("unk_token", "eos_token", "pad_token")}),
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
    "PegasusTokenizer": "pegasus", "Qwen2Tokenizer": "qwen2", "XLNetTokenizer": "xlnet",
}  # fmt: skip
# The families of model types no preset reads (a sentence-transformers model on MPNet, say): the
# presets name their own (``Preset.tokenizer_family``).
_OTHER_MODEL_TYPE_FAMILY = {
    "mpnet": "mpnet", "gptj": "gpt2", "longformer": "roberta", "pegasus_x": "pegasus", "bigbird_pegasus": "pegasus",
}  # fmt: skip
# Without any config, the files alone decide.
_FILES_FAMILY = {
    "vocab.txt": "bert", "vocab.json": "gpt2", "spiece.model": "albert", "sentencepiece.bpe.model": "xlm-roberta",
    "source.spm": "marian",
}  # fmt: skip


def family_for(tokenizer_class: Any, model_type: Any, source: str) -> tuple[str, Family]:
    """The family's row, and the name that chose it: the tokenizer class, else config.json's
    model type, else ``source``, the vocabulary file itself."""
    if tokenizer_class:
        if not isinstance(tokenizer_class, str):
            raise LmatlasError(
                f"tokenizer_class in tokenizer_config.json or config.json is not a name: {tokenizer_class!r}"
            )
        name = _CLASS_FAMILY.get(tokenizer_class.removesuffix("Fast"))
        if name is None and source != "tokenizer.json":
            raise LmatlasError(f"tokenizer class {tokenizer_class} can only be loaded from a tokenizer.json")
        return tokenizer_class, FAMILIES[name or "generic"]
    name = _model_type_family(model_type)
    if name is not None:
        return f"model type {model_type}", FAMILIES[name]
    name = _FILES_FAMILY.get(source, "generic")
    return name, FAMILIES[name]


def _model_type_family(model_type: Any) -> str | None:
    """The family a config.json's model_type implies, for checkpoints that name no tokenizer class."""
    if not isinstance(model_type, str):
        return None
    from ..presets import tokenizer_family  # the presets know their models' tokenizers

    return tokenizer_family(model_type) or _OTHER_MODEL_TYPE_FAMILY.get(model_type)
