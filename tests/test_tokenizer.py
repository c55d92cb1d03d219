"""lmatlas.tokenizer against transformers' fast tokenizers, on the same files.

Each variant is a tokenizer folder (a tokenizer.json, or only the original vocabulary files with
or without configs); lmatlas and HF load it independently and must agree on the assembled
pipeline, the special tokens and settings, and on every output: ids, masks, token types,
offsets, truncation, padding and decoded text. SentencePiece models are trained on SST-2 in a
session fixture, so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lmatlas.errors import LmatlasError
from lmatlas.tokenizer import VERY_LARGE_INTEGER, BatchEncoding, load_tokenizer, read_sentencepiece_model

from .helpers_tokenizer import (
    HAND_CASES,
    Variant,
    as_lists,
    assert_same_output,
    gpt2_files,
    hf_auto,
    hf_class,
    make_folder,
    minilm_folder,
    pipeline_json,
    sst2_sentences,
    train_sentencepiece,
)
from .reference import transformers


# ---------------------------------------------------------------------------------------------
# Data and folders
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return sst2_sentences(300)


@pytest.fixture(scope="session")
def texts(sentences) -> list[str]:
    return sentences + HAND_CASES


@pytest.fixture(scope="session")
def spm_models(tmp_path_factory, sentences) -> dict:
    """Tiny SentencePiece models trained on SST-2 (and the hand cases, so that accents, CJK and
    emoji reach the vocabulary): ALBERT-style and fairseq-style (XLM-R), unigram and BPE."""
    root = tmp_path_factory.mktemp("spm")
    corpus = root / "corpus.txt"
    # Numbers with commas give pieces like "▁7,", which ALBERT's converter scores down.
    numbers = [f"it made {i % 9 + 1},{100 + i * 7 % 900} dollars in {i % 7 + 1}, {i % 5 + 2}, and {i % 3 + 4}," for i in range(300)]
    corpus.write_text("\n".join(sst2_sentences(3000) + HAND_CASES + numbers) + "\n", encoding="utf-8")
    albert = dict(pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]"], user_defined_symbols=["[MASK]"])
    return {
        "albert_unigram": train_sentencepiece(root / "a", "spiece.model", corpus, "unigram", **albert),
        "albert_bpe": train_sentencepiece(root / "b", "spiece.model", corpus, "bpe", **albert),
        "xlmr_unigram": train_sentencepiece(root / "c", "sentencepiece.bpe.model", corpus, "unigram"),
        "xlmr_bpe": train_sentencepiece(root / "d", "sentencepiece.bpe.model", corpus, "bpe"),
        # XLNet's layout: <unk> <s> </s> <cls> <sep> <pad> <mask> <eod> <eop>.
        "xlnet_unigram": train_sentencepiece(root / "e", "spiece.model", corpus, "unigram", unk_id=0, bos_id=1,
                                             eos_id=2, pad_id=5, control_symbols=["<cls>", "<sep>"],
                                             user_defined_symbols=["<mask>", "<eod>", "<eop>"]),
    }


def _minilm(*names):
    return [minilm_folder() / n for n in names]


def _bert_config():
    return json.loads((minilm_folder() / "tokenizer_config.json").read_text(encoding="utf-8"))


def _variant(name, files, tokenizer_config=None, config=None, hf=None, has_pad=True, special_tokens_map=None):
    """A folder holding ``files(spm_models)`` and the given configs."""

    def build(root, spm_models):
        tok_cfg = tokenizer_config() if callable(tokenizer_config) else tokenizer_config
        return make_folder(root, name, files(spm_models), tok_cfg, config, special_tokens_map)

    return Variant(name, build, hf or hf_auto, has_pad)


VOCAB_TXT = lambda m: _minilm("vocab.txt")  # noqa: E731
BPE_FILES = lambda m: gpt2_files()  # noqa: E731
OPT_CONFIG = {
    "tokenizer_class": "GPT2Tokenizer", "add_bos_token": True, "bos_token": "</s>", "eos_token": "</s>",
    "unk_token": "</s>", "pad_token": "<pad>", "model_max_length": 1_000_000,
}  # fmt: skip



def _qwen2_folder(root, spm_models):
    """Qwen2's tokenizer as transformers writes it: a tokenizer.json (its own split pattern and
    NFC normalizer before a byte-level BPE, here over GPT-2's merges) with Qwen2Tokenizer's config."""
    folder = root / "qwen2"
    vocab, merges = gpt2_files()
    transformers().Qwen2TokenizerFast(vocab_file=str(vocab), merges_file=str(merges)).save_pretrained(str(folder))
    return folder


VARIANTS = [
    # WordPiece: the default model as shipped, its bare vocab.txt, and config variants.
    Variant("minilm_json", lambda root, m: minilm_folder()),
    _variant("bert_vocab", lambda m: _minilm("vocab.txt", "tokenizer_config.json")),
    _variant("bert_bare", VOCAB_TXT, hf=hf_class("BertTokenizerFast")),
    _variant(
        "bert_cased_json", lambda m: _minilm("tokenizer.json"),
        lambda: {**_bert_config(), "do_lower_case": False, "strip_accents": False},
    ),  # fmt: skip
    _variant(
        "bert_cased_nochinese", VOCAB_TXT,
        {"tokenizer_class": "BertTokenizer", "do_lower_case": False, "tokenize_chinese_chars": False},
    ),  # fmt: skip
    _variant(
        "bert_extra_specials", VOCAB_TXT,
        {"tokenizer_class": "BertTokenizer", "additional_special_tokens": ["<x1>"], "pad_token": "[unused0]"},
        special_tokens_map={"additional_special_tokens": ["<x1>", "<x2>"], "mask_token": "[unused1]"},
    ),  # fmt: skip
    _variant("distilbert", VOCAB_TXT, config={"model_type": "distilbert"}),
    _variant("electra", VOCAB_TXT, {"tokenizer_class": "ElectraTokenizer", "model_max_length": 64}),
    _variant("mpnet", VOCAB_TXT, {"tokenizer_class": "MPNetTokenizer"}),
    # Byte-level BPE: GPT-2 as shipped, OPT's </s>-first variant, RoBERTa-style by config.
    _variant("gpt2_bare", BPE_FILES, hf=hf_class("GPT2TokenizerFast"), has_pad=False),
    _variant("gpt2", BPE_FILES, config={"model_type": "gpt2"}, has_pad=False),
    _variant("opt", BPE_FILES, OPT_CONFIG),
    _variant("roberta_by_type", BPE_FILES, config={"model_type": "roberta"}),
    _variant(
        "roberta_by_class", BPE_FILES,
        {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": True, "model_max_length": 512},
    ),  # fmt: skip
    _variant("bart", BPE_FILES, config={"model_type": "bart"}),
    Variant("qwen2_json", _qwen2_folder),
    # SentencePiece: ALBERT (spiece.model) and XLM-R (sentencepiece.bpe.model), unigram and BPE.
    _variant("albert", lambda m: [m["albert_unigram"]], config={"model_type": "albert"}),
    _variant("albert_bare", lambda m: [m["albert_unigram"]], hf=hf_class("AlbertTokenizerFast")),
    _variant(
        "albert_cased_bpe", lambda m: [m["albert_bpe"]],
        {"tokenizer_class": "AlbertTokenizer", "do_lower_case": False, "keep_accents": True},
    ),  # fmt: skip
    _variant("fairseq_unigram", lambda m: [m["xlmr_unigram"]], config={"model_type": "xlm-roberta"}),
    _variant("fairseq_bpe_bare", lambda m: [m["xlmr_bpe"]], hf=hf_class("XLMRobertaTokenizerFast")),
    # XLNet: special tokens at the end (<sep> <cls>, <cls> of type 2), padding on the left.
    _variant("xlnet", lambda m: [m["xlnet_unigram"]], config={"model_type": "xlnet"}),
    _variant(
        "xlnet_lower", lambda m: [m["xlnet_unigram"]],
        {"tokenizer_class": "XLNetTokenizer", "do_lower_case": True, "keep_accents": True},
    ),  # fmt: skip
]
VARIANT_NAMES = [v.name for v in VARIANTS]


@pytest.fixture(scope="session")
def folders(tmp_path_factory, spm_models) -> dict:
    """Every variant's folder."""
    root = tmp_path_factory.mktemp("tokenizers")
    return {v.name: v.build(root, spm_models) for v in VARIANTS}


# Loaded pairs, kept for the whole session: pytest may set a parametrized session fixture up
# again when tests of different params interleave.
_LOADED: dict = {}


# HF's save_pretrained of slow-built variants: a tokenizer.json with each class's config, so the
# tokenizer.json path is exercised for every family.
SAVED = ("opt", "roberta_by_class", "bart", "albert", "fairseq_unigram", "mpnet", "xlnet")


@pytest.fixture(scope="session", params=VARIANT_NAMES + [n + "_saved" for n in SAVED])
def pair(request, folders, tmp_path_factory):
    """``(variant, hf_tokenizer, lmatlas_tokenizer)``; ``*_saved`` load HF's save_pretrained of a
    slow-built variant, i.e. a tokenizer.json with the class's config."""
    name = request.param
    if name not in _LOADED:
        base = name.removesuffix("_saved")
        variant = next(v for v in VARIANTS if v.name == base)
        if name.endswith("_saved"):
            saved = tmp_path_factory.mktemp("saved") / name
            variant.hf_loader(folders[base]).save_pretrained(str(saved))
            assert (saved / "tokenizer.json").is_file()
            folder = saved
        else:
            folder = folders[name]
        _LOADED[name] = (variant, variant.hf_loader(folder), load_tokenizer(folder))
    return _LOADED[name]


@contextlib.contextmanager
def _padded(variant, hf, me):
    """GPT-2 has no pad token: use eos on both sides for a while, as users do."""
    if variant.has_pad:
        yield
        return
    hf.pad_token, me.pad_token = hf.eos_token, me.eos_token
    try:
        yield
    finally:
        hf.pad_token = me.pad_token = None


# ---------------------------------------------------------------------------------------------
# Same pipeline, same settings
# ---------------------------------------------------------------------------------------------


def test_same_pipeline(pair):
    variant, hf, me = pair
    assert pipeline_json(me.backend_tokenizer) == pipeline_json(hf.backend_tokenizer)


def test_same_settings_and_special_tokens(pair):
    variant, hf, me = pair
    for attr in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        hf_token = hf.special_tokens_map.get(attr)  # (getattr logs an error for unset ones)
        assert getattr(me, attr) == hf_token, attr
        assert getattr(me, attr + "_id") == (getattr(hf, attr + "_id") if hf_token is not None else None), attr
    assert me.all_special_tokens == hf.all_special_tokens
    assert me.all_special_ids == hf.all_special_ids
    assert me.vocab_size == len(hf) == len(me)
    assert me.get_vocab() == hf.get_vocab()
    assert me.model_max_length == hf.model_max_length
    assert me.model_input_names == hf.model_input_names
    assert me.padding_side == hf.padding_side
    assert me.truncation_side == hf.truncation_side
    assert me.clean_up_tokenization_spaces == hf.clean_up_tokenization_spaces
    assert me.num_special_tokens_to_add(pair=True) == hf.num_special_tokens_to_add(pair=True)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_batch_ids_offsets_and_masks(pair, texts, add_special_tokens):
    variant, hf, me = pair
    kw = dict(add_special_tokens=add_special_tokens, return_offsets_mapping=True, return_special_tokens_mask=True, return_length=True)
    assert_same_output(hf(texts, **kw), me(texts, **kw), variant.name)


def test_single_texts_tokens_and_encode(pair, texts):
    variant, hf, me = pair
    for text in texts[:40] + HAND_CASES:
        assert_same_output(hf(text), me(text), f"{variant.name} {text!r}")
        assert me.tokenize(text) == hf.tokenize(text), text
        assert me.encode(text) == hf.encode(text), text
        assert me.encode(text, add_special_tokens=False) == hf.encode(text, add_special_tokens=False), text
    ids = me.encode(texts[0])
    assert me.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    assert me.convert_ids_to_tokens(ids, skip_special_tokens=True) == hf.convert_ids_to_tokens(ids, skip_special_tokens=True)
    assert me.convert_ids_to_tokens(ids[0]) == hf.convert_ids_to_tokens(ids[0])
    tokens = hf.tokenize(texts[1]) + ["surely-not-a-token-∰"]
    assert me.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert me.convert_tokens_to_ids(tokens[0]) == hf.convert_tokens_to_ids(tokens[0])


def test_pairs(pair, sentences):
    variant, hf, me = pair
    first, second = sentences[0:100:2] + HAND_CASES, sentences[1:100:2] + HAND_CASES[::-1]
    kw = dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_token_type_ids=True)
    assert_same_output(hf(first, second, **kw), me(first, second, **kw), variant.name)
    for a, b in zip(first[:10] + ["only one"], second[:10] + [""]):  # an empty pair is no pair
        assert_same_output(hf(a, b), me(a, b), f"{variant.name} {a!r} {b!r}")
        assert me.encode(a, b) == hf.encode(a, b)
        out = me(a, b)
        assert out.sequence_ids() == hf(a, b).sequence_ids()
        assert out.word_ids() == hf(a, b).word_ids()
    assert me.tokenize(first[0], second[0], add_special_tokens=True) == hf.tokenize(first[0], second[0], add_special_tokens=True)


@pytest.mark.parametrize("max_length", [5, 16, 40])
def test_truncation(pair, sentences, max_length):
    variant, hf, me = pair
    single = sentences[:60] + HAND_CASES
    for truncation in (True, "longest_first"):
        kw = dict(truncation=truncation, max_length=max_length, return_offsets_mapping=True)
        assert_same_output(hf(single, **kw), me(single, **kw), f"{variant.name} {kw}")
    # max_length alone truncates (HF's implicit longest_first).
    assert_same_output(hf(single, max_length=max_length), me(single, max_length=max_length), variant.name)
    assert me.encode(single[0], max_length=max_length) == hf.encode(single[0], max_length=max_length)
    # Pairs, with each strategy; short second sentences so only_first can always fit.
    firsts, seconds = sentences[:60:2], [s[:12] for s in sentences[1:60:2]]
    for strategy in ("longest_first", "only_first"):
        kw = dict(truncation=strategy, max_length=max_length + 12)
        assert_same_output(hf(firsts, seconds, **kw), me(firsts, seconds, **kw), f"{variant.name} {strategy}")
    kw = dict(truncation="only_second", max_length=max_length + 40)
    shorts = [s[:25] for s in firsts]
    assert_same_output(hf(shorts, firsts, **kw), me(shorts, firsts, **kw), f"{variant.name} only_second")


def test_truncation_left_and_model_max_length(pair, sentences):
    variant, hf, me = pair
    long = [" ".join(sentences[:80])] + sentences[:5]
    try:
        hf.truncation_side = me.truncation_side = "left"
        assert_same_output(hf(long, truncation=True, max_length=12), me(long, truncation=True, max_length=12), variant.name)
    finally:
        hf.truncation_side = me.truncation_side = "right"
    # No max_length: model_max_length, or no truncation at all when the model sets none.
    assert_same_output(hf(long, truncation=True), me(long, truncation=True), variant.name)
    # Nothing carries over from a truncating call to the next one.
    me(long, truncation=True, max_length=7, padding="max_length") if variant.has_pad else me(long, max_length=7)
    assert_same_output(hf(long), me(long), variant.name)


def test_overflowing_tokens_with_stride(pair, sentences):
    variant, hf, me = pair
    questions, contexts = [s[:20] for s in sentences[:8]], [" ".join(sentences[i : i + 6]) for i in range(8)]
    kw = dict(truncation="only_second", max_length=48, stride=8, return_overflowing_tokens=True, return_offsets_mapping=True)
    assert_same_output(hf(questions, contexts, **kw), me(questions, contexts, **kw), variant.name)
    kw = dict(truncation=True, max_length=10, stride=3, return_overflowing_tokens=True)
    assert_same_output(hf(contexts[0], **kw), me(contexts[0], **kw), variant.name)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding(pair, texts, sentences, side):
    variant, hf, me = pair
    with _padded(*pair):
        hf.padding_side = me.padding_side = side
        try:
            _compare_padding(variant, hf, me, texts[:30] + HAND_CASES, sentences, side)
        finally:
            hf.padding_side = me.padding_side = "right"


def _compare_padding(variant, hf, me, batch, sentences, side):
    for kw in (
        dict(padding=True),
        dict(padding="longest", return_offsets_mapping=True, return_special_tokens_mask=True),
        dict(padding="max_length", max_length=64, truncation=True),
        dict(padding=True, truncation=True, max_length=16, pad_to_multiple_of=8),
        dict(padding=True, pad_to_multiple_of=5),
    ):
        assert_same_output(hf(batch, **kw), me(batch, **kw), f"{variant.name} {kw}")
    kw = dict(padding=True, truncation="only_second", max_length=32)
    pairs = ([s[:10] for s in sentences[:20]], sentences[20:40])
    assert_same_output(hf(*pairs, **kw), me(*pairs, **kw), f"{variant.name} pairs {kw}")
    # padding_side per call overrides the attribute
    other = "left" if side == "right" else "right"
    assert_same_output(hf(batch, padding=True, padding_side=other), me(batch, padding=True, padding_side=other), variant.name)
    kw = dict(padding="max_length", max_length=50)
    assert_same_output(hf(batch[0], **kw), me(batch[0], **kw), variant.name)


@pytest.mark.parametrize("kind", ["pt", "np"])
def test_tensors(pair, sentences, kind):
    variant, hf, me = pair
    batch = sentences[:10]
    with _padded(*pair):
        _compare_tensors(variant, hf, me, batch, kind)


def _compare_tensors(variant, hf, me, batch, kind):
    for args, kw in (
        ((batch,), dict(padding=True)),
        ((batch, batch[::-1]), dict(padding="max_length", truncation=True, max_length=32, return_offsets_mapping=True)),
        ((batch[0],), {}),  # one text still gets the batch dimension
    ):
        want, got = hf(*args, return_tensors=kind, **kw), me(*args, return_tensors=kind, **kw)
        for key in want:
            assert type(got[key]) is type(want[key]), key
            assert got[key].dtype == want[key].dtype and tuple(got[key].shape) == tuple(want[key].shape), key
        assert_same_output(want, got, f"{variant.name} {kind}")


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def test_decode(pair, texts, sentences):
    variant, hf, me = pair
    batch = hf(texts)["input_ids"] + hf(sentences[:40:2], sentences[1:40:2])["input_ids"]
    for skip in (False, True):
        for clean in (None, True, False):
            kw = dict(skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
            assert me.batch_decode(batch, **kw) == hf.batch_decode(batch, **kw), kw
        for ids in batch[:25]:
            assert me.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
    ids = batch[0]
    assert me.decode(torch.tensor(ids)) == hf.decode(ids)
    assert me.decode(np.array(ids)) == hf.decode(ids)
    assert me.decode(ids[1]) == hf.decode(ids[1])
    assert me.decode([]) == hf.decode([])
    assert me.batch_decode(torch.tensor([ids, ids])) == hf.batch_decode([ids, ids])


# ---------------------------------------------------------------------------------------------
# The SentencePiece reader
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["albert_unigram", "albert_bpe", "xlmr_unigram", "xlmr_bpe"])
def test_sentencepiece_reader(spm_models, model):
    """Every field the reader returns, against sentencepiece itself and its protobuf schema."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    path = spm_models[model]
    mine = read_sentencepiece_model(path)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert len(mine.pieces) == sp.get_piece_size()
    for i, (piece, score, kind) in enumerate(mine.pieces):
        assert piece == sp.id_to_piece(i)
        assert score == pytest.approx(sp.get_score(i), abs=0)
        assert (kind == 3) == sp.is_control(i) and (kind == 2) == sp.is_unknown(i)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    assert [p.type for p in proto.pieces] == [k for _, _, k in mine.pieces]
    assert mine.model_type == proto.trainer_spec.model_type == (1 if "unigram" in model else 2)
    assert mine.unk_id == proto.trainer_spec.unk_id == sp.unk_id()
    assert mine.unk_piece == proto.trainer_spec.unk_piece
    assert mine.precompiled_charsmap == proto.normalizer_spec.precompiled_charsmap != b""
    assert mine.add_dummy_prefix == proto.normalizer_spec.add_dummy_prefix
    assert mine.remove_extra_whitespaces == proto.normalizer_spec.remove_extra_whitespaces


def test_sentencepiece_reader_negative_ids_and_flags(tmp_path, sentences):
    """Negative int32 fields (10-byte varints) and non-default booleans."""
    from sentencepiece import sentencepiece_model_pb2

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(sentences[:500]), encoding="utf-8")
    path = train_sentencepiece(
        tmp_path, "spiece.model", corpus, "unigram", unk_id=2, bos_id=-1, eos_id=-1, pad_id=0,
        add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity",
    )  # fmt: skip
    mine = read_sentencepiece_model(path)
    assert mine.unk_id == 2 and not mine.add_dummy_prefix and not mine.remove_extra_whitespaces
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    proto.trainer_spec.unk_id = -1  # not a valid model, but exercises the sign handling
    path.write_bytes(proto.SerializeToString())
    assert read_sentencepiece_model(path).unk_id == -1


def test_sentencepiece_matches_sentencepiece_itself(spm_models, sentences):
    """Beyond HF: the ALBERT-style pipeline's pieces equal sentencepiece's on plain lowercase text
    (ALBERT's extra normalization is a no-op on lowercase ASCII). Stripped, because HF's ALBERT pipeline keeps
    a trailing space as a lone "▁" where sentencepiece drops it."""
    import sentencepiece as spm

    path = spm_models["albert_unigram"]
    sp = spm.SentencePieceProcessor(model_file=str(path))
    tok = load_tokenizer(path.parent)
    plain = [t for t in sentences[:100] if t.isascii()]  # ALBERT strips accents; sentencepiece does not
    assert len(plain) > 80
    for text in plain:
        assert tok.tokenize(text.strip()) == sp.encode(text, out_type=str), text


# ---------------------------------------------------------------------------------------------
# The interface itself
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert():
    return load_tokenizer(minilm_folder())


def test_batch_encoding_access(bert):
    out = bert(["hello world", "a"], padding=True, return_offsets_mapping=True)
    assert isinstance(out, BatchEncoding) and isinstance(out, dict)
    assert out.input_ids is out["input_ids"] and out.attention_mask == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert out.tokens(0) == ["[CLS]", "hello", "world", "[SEP]"]
    assert out.word_ids(1) == [None, 0, None, None]
    assert out.sequence_ids(0) == [None, 0, 0, None]
    assert out.offset_mapping[0] == [(0, 0), (0, 5), (6, 11), (0, 0)]
    assert len(out.encodings) == 2
    with pytest.raises(AttributeError):
        out.missing_key
    moved = bert(["hello world"], return_tensors="pt").to("cpu")
    assert moved["input_ids"].device.type == "cpu"


def test_defaults_and_settings(bert, tmp_path):
    assert bert.model_max_length == 512 and bert.padding_side == "right"
    assert bert.model_input_names == ["input_ids", "token_type_ids", "attention_mask"]
    # tokenizer.json of the default model carries truncation 128 / padding 128: ignored, as in HF
    assert len(bert("word " * 300)["input_ids"]) == 302
    assert len(bert("short")["input_ids"]) == 3
    bare = load_tokenizer(make_folder(tmp_path, "bare", [minilm_folder() / "vocab.txt"]))
    assert bare.model_max_length == VERY_LARGE_INTEGER
    # Without a model_max_length, truncation=True and padding="max_length" do nothing (as HF).
    assert len(bare("word " * 600, truncation=True, padding="max_length")["input_ids"]) == 602
    bare.padding_side = "left"
    assert bare(["a b", "a"], padding=True)["input_ids"][1] == [0, 101, 1037, 102]
    bare.pad_token = "[MASK]"
    assert bare.pad_token_id == 103 and bare(["a b", "a"], padding=True)["input_ids"][1][0] == 103
    assert "Tokenizer(" in repr(bare)


def test_runtime_never_imports_transformers():
    code = (
        "import sys, lmatlas.tokenizer as t; "
        "tok = t.load_tokenizer(sys.argv[1]); tok(['a b'], padding=True, return_tensors='pt'); "
        "bad = [m for m in ('transformers', 'sentence_transformers', 'google.protobuf') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code, str(minilm_folder())], check=True)


# ---------------------------------------------------------------------------------------------
# Errors a user can make
# ---------------------------------------------------------------------------------------------


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(LmatlasError, match=match):
        fn(*args, **kwargs)


def test_folder_errors(tmp_path):
    _raises("no such folder", load_tokenizer, tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    _raises("not a folder", load_tokenizer, tmp_path / "file.txt")
    empty = make_folder(tmp_path, "empty", [], {"tokenizer_class": "BertTokenizer"})
    _raises("has no tokenizer files", load_tokenizer, empty)


def test_corrupt_file_errors(tmp_path):
    folder = make_folder(tmp_path, "badjson", [])
    (folder / "tokenizer.json").write_text("{not json")
    _raises("tokenizer.json: not valid JSON", load_tokenizer, folder)
    folder = make_folder(tmp_path, "nomodel", [])
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    _raises("not a tokenizers JSON file", load_tokenizer, folder)
    folder = make_folder(tmp_path, "badmodel", [])
    (folder / "tokenizer.json").write_text('{"model": {"type": "Nonsense"}}')
    _raises("cannot parse .*tokenizer.json", load_tokenizer, folder)
    folder = make_folder(tmp_path, "badcfg", _minilm("vocab.txt"))
    (folder / "tokenizer_config.json").write_text("[1, 2")
    _raises("tokenizer_config.json: not valid JSON", load_tokenizer, folder)
    folder = make_folder(tmp_path, "cfglist", _minilm("vocab.txt"), [1, 2])
    _raises("tokenizer_config.json: expected a JSON object, found list", load_tokenizer, folder)
    folder = make_folder(tmp_path, "binvocab", [])
    (folder / "vocab.txt").write_bytes(b"\xff\xfe\x00bad")
    _raises("vocab.txt: not UTF-8 text", load_tokenizer, folder)
    folder = make_folder(tmp_path, "emptyvocab", [])
    (folder / "vocab.txt").write_text("")
    _raises("vocab.txt is empty", load_tokenizer, folder)
    folder = make_folder(tmp_path, "badspm", [])
    (folder / "spiece.model").write_bytes(b"\x0a\xff\xff")
    _raises("not a valid SentencePiece model", load_tokenizer, folder)
    (folder / "spiece.model").write_bytes(b"")
    _raises("not a valid SentencePiece model: it has no pieces", load_tokenizer, folder)
    folder = make_folder(tmp_path, "badspecial", _minilm("vocab.txt"), {"cls_token": 5})
    _raises("neither a string nor a token", load_tokenizer, folder)


def test_bytelevel_file_errors(tmp_path):
    vocab, merges = gpt2_files()
    _raises("no merges.txt", load_tokenizer, make_folder(tmp_path, "nomerges", [vocab]))
    folder = make_folder(tmp_path, "badmerges", [vocab])
    (folder / "merges.txt").write_text("#version: 0.2\nĠ t\nthree parts here\n")
    _raises("line 3 of .*merges.txt is not a pair", load_tokenizer, folder)
    folder = make_folder(tmp_path, "badvocab", [merges])
    (folder / "vocab.json").write_text('["a", "b"]')
    _raises("vocab.json: expected a JSON object, found list", load_tokenizer, folder)


def test_config_mismatch_errors(tmp_path):
    folder = make_folder(tmp_path, "wrongkind", _minilm("vocab.txt"), {"tokenizer_class": "AlbertTokenizer"})
    _raises("has vocab.txt, but its config asks for AlbertTokenizer, which needs a SentencePiece .model", load_tokenizer, folder)
    folder = make_folder(tmp_path, "wrongtype", gpt2_files(), None, {"model_type": "bert"})
    _raises("asks for model type bert, which needs vocab.txt", load_tokenizer, folder)
    folder = make_folder(tmp_path, "unknownclass", _minilm("vocab.txt"), {"tokenizer_class": "LlamaTokenizer"})
    _raises("LlamaTokenizer can only be loaded from a tokenizer.json", load_tokenizer, folder)
    folder = make_folder(tmp_path, "nocls", _minilm("vocab.txt"), {"cls_token": None})
    _raises("has no cls token", load_tokenizer, folder)
    for key, value, match in (
        ("padding_side", "middle", "padding_side in .*tokenizer_config.json must be"),
        ("truncation_side", 3, "truncation_side in .*tokenizer_config.json must be"),
        ("model_max_length", "long", "model_max_length in .*tokenizer_config.json"),
        ("model_input_names", "input_ids", "model_input_names in .*tokenizer_config.json"),
        ("tokenizer_class", ["BertTokenizer"], "tokenizer_class .* is not a name"),
    ):
        folder = make_folder(tmp_path, f"bad_{key}", _minilm("vocab.txt"), {key: value})
        _raises(match, load_tokenizer, folder)


def test_call_argument_errors(bert):
    _raises("padding='bogus'", bert, "a", padding="bogus")
    _raises("truncation='bogus'", bert, "a", truncation="bogus")
    _raises("return_tensors='tf'", bert, "a", return_tensors="tf")
    _raises("max_length must be a positive integer", bert, "a", max_length=0)
    _raises("max_length must be a positive integer", bert, "a", max_length="10")
    _raises("stride must be", bert, "a", stride=-1)
    _raises("pad_to_multiple_of must be", bert, "a", padding=True, pad_to_multiple_of=0)
    _raises("not a multiple of pad_to_multiple_of", bert, "a", padding=True, truncation=True, max_length=10, pad_to_multiple_of=8)
    _raises("padding_side must be", bert, "a", padding=True, padding_side="middle")
    _raises("empty list", bert, [])
    _raises("a string or a list of strings", bert, None)
    _raises("a string or a list of strings", bert, ["a", 3])
    _raises("text_pair must be a list of strings as long as text", bert, ["a", "b"], ["c"])
    _raises("text_pair must be a list of strings as long as text", bert, ["a", "b"], "c")
    _raises("text_pair must be a string", bert, "a", ["b"])
    _raises("encode takes one string", bert.encode, ["a"])
    _raises("different lengths", bert, ["a b c", "a"], return_tensors="pt")
    # What the Rust side refuses becomes an LmatlasError too (a Rust panic for the stride).
    _raises("Second sequence not provided", bert, "a b c d e f g", truncation="only_second", max_length=4)
    _raises("too short", bert, "a b c d e f g", "x", truncation="only_second", max_length=5)
    _raises("stride", bert, "a b c d e f g h", truncation=True, max_length=6, stride=4, return_overflowing_tokens=True)
    _raises("sequence of integers", bert.decode, [[1, 2], [3]])
    with pytest.raises(LmatlasError, match="padding_side must be"):
        bert.padding_side = "up"
    with pytest.raises(LmatlasError, match="truncation_side must be"):
        bert.truncation_side = "middle"
    with pytest.raises(LmatlasError, match="must be a string or None"):
        bert.pad_token = 3
    # and the tokenizer still works afterwards
    assert bert("a b")["input_ids"] == [101, 1037, 1038, 102]


def test_padding_without_pad_token(tmp_path):
    gpt2 = load_tokenizer(make_folder(tmp_path, "gpt2", gpt2_files()))
    assert gpt2.pad_token is None and gpt2.pad_token_id is None
    _raises("padding needs a pad token", gpt2, ["a", "b c"], padding=True)
    assert as_lists(gpt2(["a", "b c"])["input_ids"]) == [[64], [65, 269]]
