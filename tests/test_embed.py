"""Sentence embeddings against sentence-transformers, on the real default model and on small
checkpoints with each pooling mode."""

from __future__ import annotations

import csv
import json
import shutil
import warnings

import numpy as np
import pytest

import lmatlas
from lmatlas.embeddings import SentenceEncoder

from .paths import data_file
from .reference import default_model_path, randomize, require, transformers


def sst2_sentences(n: int) -> list[str]:
    with open(data_file("sst2", "train.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    # Every 37th sentence: a spread of lengths, from two words to long reviews.
    return [r[0] for r in rows[:: 37][:n]]


def stsb_pairs() -> tuple[list[str], list[str], np.ndarray]:
    a, b, scores = [], [], []
    with open(data_file("stsb", "train.tsv"), encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            a.append(cols[7])
            b.append(cols[8])
            scores.append(float(cols[9]))
    return a, b, np.array(scores)


@pytest.fixture(scope="module")
def st_model():
    st = require("sentence_transformers")
    return st.SentenceTransformer(str(default_model_path()), device="cpu")


def cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


def test_default_model_matches_sentence_transformers(st_model):
    texts = sst2_sentences(300) + ["", "café naïve Ångström", "日本語のテキスト", "emoji 🤗👍🏽", "word " * 400]
    with pytest.warns(UserWarning, match="truncated"):
        ours = lmatlas.embed(texts)
    ref = st_model.encode(texts, convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (len(texts), 384)
    cos = cosines(ours, ref)
    assert cos.min() >= 0.9999, f"lowest cosine {cos.min():.6f} at {texts[int(cos.argmin())]!r}"
    assert np.abs(ours - ref).max() < 1e-4


def test_stsb_spearman_equals_sentence_transformers(st_model):
    from scipy.stats import spearmanr

    a, b, gold = stsb_pairs()
    unique = sorted(set(a) | set(b))  # embed each sentence once
    row = {s: i for i, s in enumerate(unique)}
    ia, ib = [row[s] for s in a], [row[s] for s in b]
    ours_v = lmatlas.embed(unique, batch_size=64)
    ref_v = st_model.encode(unique, batch_size=64)
    ours = spearmanr(cosines(ours_v[ia], ours_v[ib]), gold).statistic
    ref = spearmanr(cosines(ref_v[ia], ref_v[ib]), gold).statistic
    assert abs(ours - ref) <= 0.0005, (ours, ref)
    assert ours > 0.8  # all-MiniLM-L6-v2 is a good model: a sanity floor


def test_model_is_loaded_once():
    from lmatlas import embeddings as embed_module

    lmatlas.embed(["one"])
    first = embed_module.encoder(None)
    lmatlas.embed(["two"])
    assert embed_module.encoder(None) is first


def test_single_text_and_empty_list():
    v = lmatlas.embed("a single sentence")
    assert v.shape == (384,)
    assert lmatlas.embed([]).shape == (0, 384)


def test_similarity():
    close = lmatlas.similarity("A man is playing a guitar.", "Someone plays the guitar.")
    far = lmatlas.similarity("A man is playing a guitar.", "The stock market fell sharply today.")
    assert -1.0 <= far < close <= 1.0


def test_no_truncate_refuses_long_input():
    with pytest.raises(lmatlas.LmatlasError, match="more than the model's 256"):
        lmatlas.embed(["word " * 400], truncate=False)


def _tiny_sentence_model(folder, pooling: str, normalize: bool):
    """A small random BERT in a sentence-transformers folder, with the default model's vocabulary."""
    tf = transformers()
    src = default_model_path()
    config = tf.BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                           intermediate_size=64, max_position_embeddings=64)
    model = tf.BertModel(config).eval()
    randomize(model, seed=3)
    model.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir()
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    flags = {f"pooling_mode_{m}": False for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")}
    flags[f"pooling_mode_{pooling}"] = True
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 48, **flags}))


@pytest.mark.parametrize("pooling,normalize", [("cls_token", False), ("max_tokens", True), ("mean_sqrt_len_tokens", False), ("mean_tokens", True)])
def test_pooling_modes_match_sentence_transformers(pooling, normalize, tmp_path):
    st = require("sentence_transformers")
    _tiny_sentence_model(tmp_path, pooling, normalize)
    texts = sst2_sentences(40)
    with warnings.catch_warnings():  # some SST-2 sentences exceed this model's 40 tokens
        warnings.simplefilter("ignore")
        ours = SentenceEncoder(tmp_path).encode(texts, batch_size=8)
    ref = st.SentenceTransformer(str(tmp_path), device="cpu").encode(texts, batch_size=8)
    assert np.abs(ours - ref).max() <= 1e-4
