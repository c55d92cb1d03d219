"""The encoder-decoders' SentencePiece tokenizers against transformers, on the same files.

T5 (``spiece.model``, sentinel tokens ``<extra_id_N>``), Pegasus (``spiece.model`` behind 103
ids for pre-training tokens: ``<mask_1>``, ``<mask_2>``, ``<unk_2>`` ... ``<unk_102>``), mBART and
mBART-50 (language codes around each text, ``src_lang`` / ``tgt_lang``), and Marian (separate
source and target SentencePiece models over one ``vocab.json``, or two vocabularies). The
SentencePiece models are trained on SST-2 in a session fixture. transformers' Marian tokenizer is the slow one (there is
no fast one): the reference segments with the ``sentencepiece`` library itself.
"""

from __future__ import annotations

import json
import shutil

import pytest

from lmatlas.errors import LmatlasError
from lmatlas.tokenizer import load_tokenizer

from .helpers_tokenizer import (  # noqa: F401  (spm_files: the fixture)
    HAND_CASES,
    MARIAN_CONFIG,
    Variant,
    assert_same_output,
    hf_auto,
    make_folder,
    pipeline_json,
    spm_files,
    sst2_sentences,
)
from .reference import transformers

SENTENCES = 200


@pytest.fixture(scope="session")
def texts() -> list[str]:
    # Language codes at the start of a text (Marian), special tokens, sentinels and Pegasus' masks,
    # placeholders and line-break piece typed in it.
    extra = [
        ">>fr<< Hello world", ">>de<<", "a sentence </s> with <unk> specials <pad>", "<extra_id_0> is <extra_id_7>",
        "a <mask_1> sentence, a <mask_2> word and <unk_5>,<unk_102> <unk_1>", "line one<n>line two <n> three",
    ]  # fmt: skip
    return sst2_sentences(SENTENCES) + HAND_CASES + extra


def _variant(name, files, tokenizer_config=None, config=None, hf=None):
    def build(root, spm_files):
        return make_folder(root, name, files(spm_files), tokenizer_config, config)

    return Variant(name, build, hf or hf_auto)


PEGASUS = {"tokenizer_class": "PegasusTokenizer"}


def _pegasus_without_json(root, spm_files):
    """What transformers saves for Pegasus (the configs with added_tokens_decoder and the
    placeholders listed, special_tokens_map.json), less tokenizer.json."""
    plain = make_folder(root, "pegasus_plain", [spm_files["pegasus"]], {**PEGASUS, "model_max_length": 512})
    folder = root / "pegasus_without_json"
    hf_auto(plain).save_pretrained(str(folder))
    (folder / "tokenizer.json").unlink()
    return folder


VARIANTS = [
    _variant("t5", lambda f: [f["t5"]], config={"model_type": "t5"}),
    # (A bare spiece.model is ALBERT's by default: a T5 folder says T5 in one of its configs.)
    _variant("t5_by_class", lambda f: [f["t5"]], {"tokenizer_class": "T5Tokenizer"}),
    _variant("t5_ten_sentinels", lambda f: [f["t5"]], {"tokenizer_class": "T5Tokenizer", "extra_ids": 10,
                                                        "model_max_length": 512}),
    _variant("t5_not_legacy", lambda f: [f["t5"]], {"tokenizer_class": "T5Tokenizer", "legacy": False}),
    _variant("mbart", lambda f: [f["mbart"]], config={"model_type": "mbart"}),
    _variant("mbart_ro", lambda f: [f["mbart"]], {"tokenizer_class": "MBartTokenizer", "src_lang": "ro_RO",
                                                  "tgt_lang": "en_XX"}),
    _variant("mbart50", lambda f: [f["mbart"]], {"tokenizer_class": "MBart50Tokenizer", "src_lang": "ro_RO",
                                                 "tgt_lang": "de_DE"}),
    _variant("pegasus", lambda f: [f["pegasus"]], config={"model_type": "pegasus"}),
    _variant("pegasus_x", lambda f: [f["pegasus"]], config={"model_type": "pegasus_x"}),
    _variant("pegasus_by_class", lambda f: [f["pegasus"]], {**PEGASUS, "model_max_length": 512}),
    # A smaller offset, and additional tokens of its own: the placeholders are numbered on from them.
    _variant("pegasus_offset", lambda f: [f["pegasus"]], {**PEGASUS, "offset": 10,
                                                          "additional_special_tokens": ["<x>", "<mask_1>"]}),
    # Without mask_token_sent transformers' converter leaves <mask_2> out too, so every piece
    # comes two ids earlier than the slow tokenizer puts it; lmatlas does as the converter does.
    _variant("pegasus_no_mask_sent", lambda f: [f["pegasus"]], {**PEGASUS, "mask_token_sent": None}),
    Variant("pegasus_without_json", _pegasus_without_json),
    _variant("marian", lambda f: [f["source"], f["target"], f["vocab"]], MARIAN_CONFIG),
    _variant("marian_by_type", lambda f: [f["source"], f["target"], f["vocab"]], config={"model_type": "marian"}),
    _variant("marian_separate", lambda f: [f["source"], f["target"], *f["separate"]],
             {**MARIAN_CONFIG, "separate_vocabs": True}),
]  # fmt: skip
FAST = {"t5", "t5_by_class", "t5_ten_sentinels", "t5_not_legacy", "mbart", "mbart_ro", "mbart50"}
FAST |= {v.name for v in VARIANTS if v.name.startswith("pegasus")}
SAVED = ("t5", "mbart50", "mbart_ro", "pegasus")
NAMES = [v.name for v in VARIANTS] + [n + "_saved" for n in SAVED]

_LOADED: dict = {}


@pytest.fixture(scope="session")
def folders(tmp_path_factory, spm_files) -> dict:
    root = tmp_path_factory.mktemp("tokenizers_seq2seq")
    return {v.name: v.build(root, spm_files) for v in VARIANTS}


def _load_pair(name, folders, tmp_path_factory):
    if name not in _LOADED:
        base = name.removesuffix("_saved")
        variant = next(v for v in VARIANTS if v.name == base)
        folder = folders[base]
        if name.endswith("_saved"):
            saved = tmp_path_factory.mktemp("saved") / name
            variant.hf_loader(folder).save_pretrained(str(saved))
            assert (saved / "tokenizer.json").is_file()
            folder = saved
        _LOADED[name] = (name, variant.hf_loader(folder), load_tokenizer(folder))
    return _LOADED[name]


@pytest.fixture(scope="session", params=NAMES)
def pair(request, folders, tmp_path_factory):
    return _load_pair(request.param, folders, tmp_path_factory)


@pytest.fixture
def load_pair(folders, tmp_path_factory):
    return lambda name: _load_pair(name, folders, tmp_path_factory)


def test_same_pipeline_and_specials(pair):
    name, hf, me = pair
    if name.removesuffix("_saved") in FAST:
        assert pipeline_json(me.backend_tokenizer) == pipeline_json(hf.backend_tokenizer)
    assert set(me.all_special_tokens) == set(hf.all_special_tokens)
    assert me.all_special_ids == hf.convert_tokens_to_ids(me.all_special_tokens)
    assert len(me) == len(hf)
    assert me.model_max_length == hf.model_max_length
    assert (me.eos_token_id, me.pad_token_id, me.unk_token_id) == (hf.eos_token_id, hf.pad_token_id, hf.unk_token_id)


def test_ids(pair, texts):
    name, hf, me = pair
    for text in texts:
        assert me(text)["input_ids"] == hf(text)["input_ids"], f"{name}: {text!r}"


def test_batch_padded_and_truncated(pair, texts):
    name, hf, me = pair
    batch = texts[:40]
    for kw in (dict(padding=True), dict(padding="max_length", truncation=True, max_length=12), dict(max_length=7)):
        assert_same_output(hf(batch, **kw), me(batch, **kw), f"{name} {kw}")
    pt_hf, pt_me = hf(batch[:3], padding=True, return_tensors="pt"), me(batch[:3], padding=True, return_tensors="pt")
    assert_same_output(pt_hf, pt_me, name)


def test_decode(pair, texts):
    name, hf, me = pair
    for text in texts:
        ids = hf(text)["input_ids"]
        for skip in (True, False):
            assert me.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), (
                f"{name}: {text!r} skip={skip}"
            )


def test_targets(pair, texts):
    """text_target: Marian's target model (and vocabulary), mBART's target language."""
    name, hf, me = pair
    batch = texts[:30]
    if name.startswith("mbart") and hf.tgt_lang is None:
        with pytest.raises(LmatlasError, match="text_target needs the target language"):
            me(text_target=batch)
        return
    assert_same_output(hf(text_target=batch), me(text_target=batch), name)
    both_hf, both_me = hf(batch, text_target=batch, padding=True), me(batch, text_target=batch, padding=True)
    assert_same_output(both_hf, both_me, name)


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("t5")])
def test_t5_sentinels(name, load_pair):
    name, hf, me = load_pair(name)
    n = 10 if "ten" in name else 100
    assert me.convert_tokens_to_ids("<extra_id_0>") == len(me) - 1
    assert me.convert_tokens_to_ids(f"<extra_id_{n - 1}>") == hf.convert_tokens_to_ids(f"<extra_id_{n - 1}>")
    assert me.additional_special_tokens == hf.additional_special_tokens


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("mbart")])
def test_mbart_languages(name, load_pair, texts):
    name, hf, me = load_pair(name)
    assert me.lang_code_to_id == {c: hf.convert_tokens_to_ids(c) for c in me.lang_code_to_id}
    assert me.src_lang == hf.src_lang
    hf.src_lang = me.src_lang = "fr_XX"
    try:
        assert me(texts[:20])["input_ids"] == hf(texts[:20])["input_ids"]
    finally:
        hf.src_lang = me.src_lang = "ro_RO" if "ro" in name or "50" in name else "en_XX"
    with pytest.raises(LmatlasError, match="src_lang 'xx_YY' is not one of the language codes"):
        me.src_lang = "xx_YY"


def test_marian_errors(folders, tmp_path):
    bad = tmp_path / "marian"
    shutil.copytree(folders["marian"], bad)
    (bad / "target.spm").unlink()
    with pytest.raises(LmatlasError, match="no target.spm"):
        load_tokenizer(bad)
    (bad / "target.spm").write_bytes(b"not a model")
    with pytest.raises(LmatlasError, match="target.spm is not a valid SentencePiece model"):
        load_tokenizer(bad)
    vocab = json.loads((bad / "vocab.json").read_text())
    del vocab["<unk>"]
    (bad / "vocab.json").write_text(json.dumps(vocab))
    shutil.copy(folders["marian"] / "target.spm", bad / "target.spm")
    with pytest.raises(LmatlasError, match="vocab.json has no <unk> token"):
        load_tokenizer(bad)
    me = load_tokenizer(folders["marian"])
    with pytest.raises(LmatlasError, match="return_offsets_mapping is not available"):
        me("hello", return_offsets_mapping=True)


def test_t5_bad_extra_ids(folders, tmp_path):
    bad = make_folder(tmp_path, "t5", [folders["t5"] / "spiece.model"], {"tokenizer_class": "T5Tokenizer", "extra_ids": -3})
    with pytest.raises(LmatlasError, match="extra_ids in tokenizer_config.json must be a whole number"):
        load_tokenizer(bad)


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("pegasus")])
def test_pegasus_layout(name, load_pair):
    """<pad> </s> <mask_1> <mask_2> <unk_2> ... first, then the pieces shifted by the offset."""
    name, hf, me = load_pair(name)
    offset = 10 if "offset" in name else 103
    assert me.convert_tokens_to_ids(["<pad>", "</s>"]) == [0, 1]
    placeholders = [f"<unk_{i}>" for i in range(2, offset)] + ["<mask_1>", "<mask_2>", "<n>", "<unk>"]
    assert me.convert_tokens_to_ids(placeholders) == hf.convert_tokens_to_ids(placeholders)
    assert me.convert_tokens_to_ids("<n>") == offset + 3 - (2 if "no_mask_sent" in name else 0)
    assert (me.mask_token, me.mask_token_id) == (hf.mask_token, hf.mask_token_id)
    assert me.additional_special_tokens == hf.additional_special_tokens
    assert me.special_tokens_map == hf.special_tokens_map
    batch = ["a <mask_1> b", "<unk_5> c <mask_2>"]
    kw = dict(padding=True, return_special_tokens_mask=True)
    assert_same_output(hf(batch, **kw), me(batch, **kw), name)


def test_pegasus_bad_options(folders, tmp_path):
    transformers()  # the duplicate check is transformers' own: it must refuse the same config
    spiece = [folders["pegasus"] / "spiece.model"]
    # <mask_1> goes first, so the placeholders numbered on from these repeat <unk_3>.
    config = {**PEGASUS, "additional_special_tokens": ["<unk_2>", "<unk_3>"]}
    twice = make_folder(tmp_path, "twice", spiece, config)
    with pytest.raises(ValueError, match="incorrectly shifted list of <unk_x> tokens"):
        hf_auto(twice)
    with pytest.raises(LmatlasError, match="name a token twice"):
        load_tokenizer(twice)
    for offset in (3, "103", 2.5):
        bad = make_folder(tmp_path, f"offset_{offset}", spiece, {**PEGASUS, "offset": offset})
        with pytest.raises(LmatlasError, match="offset in tokenizer_config.json must be a whole number >= 4"):
            load_tokenizer(bad)
