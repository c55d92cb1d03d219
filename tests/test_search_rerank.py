"""Reranking with a cross-encoder: lmatlas' scores against sentence-transformers' CrossEncoder on
a random-weight checkpoint that transformers writes (the real MiniLM WordPiece vocabulary, odd
sizes), with the default activation (sigmoid) and with the Identity a checkpoint may name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmatlas import LmatlasError
from lmatlas.rerank import scores
from lmatlas.search import Index

from .reference import default_model_path, randomize, require, transformers

PAIRS = [
    ("What do cats do?", "Cats are small domesticated felines that purr and chase mice."),
    ("What do cats do?", "The central bank raised interest rates to fight inflation."),
    ("How is bread baked?", "Knead the dough, let it rise, and bake it in a hot oven until golden. " * 12),  # truncated
    ("Zürich?", "A short one."),
]


def write_cross_encoder(folder, activation: str | None = None, num_labels: int = 1):
    tf = transformers()
    cfg = tf.BertConfig(
        vocab_size=30522, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=50,
        max_position_embeddings=96, type_vocab_size=2, num_labels=num_labels,
    )
    torch.manual_seed(0)
    model = tf.BertForSequenceClassification(cfg).eval()
    randomize(model, seed=3)
    model.save_pretrained(folder)
    source = default_model_path()
    for name in ("vocab.txt", "special_tokens_map.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 96}))
    if activation:
        config = json.loads((folder / "config.json").read_text())
        config["sentence_transformers"] = {"activation_fn": activation}
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("activation", [None, "torch.nn.modules.linear.Identity"])
def test_scores_match_cross_encoder(tmp_path, activation):
    st = require("sentence_transformers")
    folder = write_cross_encoder(tmp_path / "ce", activation)
    reference = st.CrossEncoder(str(folder), device="cpu").predict([list(p) for p in PAIRS], batch_size=2)
    ours = np.array([scores(str(folder), q, [p])[0] for q, p in PAIRS])
    assert np.abs(ours - np.asarray(reference)).max() <= 1e-4
    if activation is None:
        assert ((ours > 0) & (ours < 1)).all()  # sigmoid
    else:
        assert (ours < 0).any() or (ours > 1).any()  # raw logits


def test_query_rerank_reorders_by_cross_encoder(tmp_path):
    st = require("sentence_transformers")
    folder = write_cross_encoder(tmp_path / "ce")
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, (_, passage) in enumerate(PAIRS[:3]):
        (docs / f"d{i}.txt").write_text(passage[:300] + "\n", encoding="utf-8")
    index = Index(tmp_path / "index")
    index.build([docs])
    hits = index.query("What do cats do?", k=3, rerank=str(folder))
    expected = st.CrossEncoder(str(folder), device="cpu").predict([["What do cats do?", h.text] for h in hits])
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert np.abs(np.array([h.score for h in hits]) - np.sort(expected)[::-1]).max() <= 1e-4

    write_cross_encoder(tmp_path / "three", num_labels=3)
    with pytest.raises(LmatlasError, match="a cross-encoder has one output, this model has 3 labels"):
        index.query("cats", rerank=str(tmp_path / "three"))
