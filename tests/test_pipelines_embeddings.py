"""The tasks the default model (all-MiniLM-L6-v2) serves: feature-extraction against
transformers.pipeline, pooled features and sentence-similarity against sentence-transformers,
and zero-shot classification through embedding similarity."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import lmatlas

from .helpers_pipelines import SENTENCES, assert_same, hf_pipeline  # noqa: F401
from .reference import default_model_path, require

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def st_model():
    st = require("sentence_transformers")
    return st.SentenceTransformer(str(default_model_path()), device="cpu")


def test_feature_extraction_matches_transformers():
    hf = hf_pipeline("feature-extraction", default_model_path())
    ours = lmatlas.pipeline("feature-extraction")  # the default model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(hf(SENTENCES), ours(SENTENCES))
        assert_same(hf(SENTENCES[0]), ours(SENTENCES[0]))
        expected = hf(SENTENCES[1], return_tensors=True)
    got = ours(SENTENCES[1], return_tensors=True)
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4
    long = "word " * 600
    assert len(ours(long, truncation=True)[0]) == 512
    assert_same(hf(long, truncation=True), ours(long, truncation=True))


def test_pooled_features_match_sentence_transformers(st_model):
    ours = lmatlas.pipeline("feature-extraction", pool=True)
    got = np.array(ours(SENTENCES))
    assert got.shape == (len(SENTENCES), 384)
    assert np.abs(got - st_model.encode(SENTENCES)).max() < 1e-4


def test_sentence_similarity_matches_sentence_transformers(st_model):
    ours = lmatlas.pipeline("sentence-similarity")
    expected = st_model.similarity(st_model.encode(SENTENCES[:1]), st_model.encode(SENTENCES[1:]))[0].tolist()
    assert_same(expected, ours({"source_sentence": SENTENCES[0], "sentences": SENTENCES[1:]}))
    assert_same(expected, ours(SENTENCES[0], sentences=SENTENCES[1:]))
    both = ours([{"source_sentence": SENTENCES[0], "sentences": SENTENCES[1:]},
                 {"source_sentence": SENTENCES[1], "sentences": [SENTENCES[1]]}])
    assert_same(expected, both[0])
    assert abs(both[1][0] - 1.0) < 1e-5


def test_zero_shot_through_embeddings(st_model):
    """The default model classifies with no NLI head: softmax over 20 x cosine similarity to
    each hypothesis, or the cosine similarities themselves with multi_label."""
    zs = lmatlas.pipeline("zero-shot-classification")
    labels = ["cinema", "food", "politics", "sport"]
    texts = [
        "I loved this movie, the acting was wonderful.",
        "The soup was too salty and the waiter was rude.",
        "The senator voted against the new tax bill.",
    ]
    results = zs(texts, candidate_labels=labels)
    assert [r["labels"][0] for r in results] == ["cinema", "food", "politics"]
    for text, r in zip(texts, results):
        assert r["sequence"] == text and sorted(r["labels"]) == sorted(labels)
        assert abs(sum(r["scores"]) - 1) < 1e-6 and r["scores"] == sorted(r["scores"], reverse=True)
    # multi_label: each label's own cosine similarity, as sentence-transformers computes it
    r = zs(texts[0], candidate_labels=labels, multi_label=True, hypothesis_template="A review about {}.")
    hyps = st_model.encode([f"A review about {label}." for label in r["labels"]])
    expected = st_model.similarity(st_model.encode([texts[0]]), hyps)[0].tolist()
    assert_same(expected, r["scores"])
    # probabilities are the softmax of 20 x those similarities
    p = zs(texts[0], candidate_labels=labels, hypothesis_template="A review about {}.")
    sims = dict(zip(r["labels"], expected))
    e = np.exp(20 * np.array([sims[label] for label in p["labels"]]))
    assert np.abs(e / e.sum() - np.array(p["scores"])).max() < 1e-4
