"""The Inference API's task routes, ``POST /models/{task}``, on tiny random-weight checkpoints
that transformers writes (helpers_pipelines): each answers what ``lmatlas.pipeline`` answers for
the same inputs and parameters, in transformers' v4 schemas; the route may name the task or the
model given with --task-model; a bad input is a 400 naming it."""

from __future__ import annotations

import httpx
import pytest

import lmatlas
from lmatlas.serve import ServerConfig
from lmatlas.serve.background import running

from .helpers_pipelines import CONTEXT, QUESTIONS, SENTENCES, assert_same, build_model, train_tokenizers
from .helpers_serve import build_chat_model

CASES = [
    ("text-classification", {"inputs": SENTENCES[:2], "parameters": {"top_k": 2}}),
    ("token-classification", {"inputs": SENTENCES[0], "parameters": {"aggregation_strategy": "simple"}}),
    ("question-answering", {"inputs": {"question": QUESTIONS[0], "context": CONTEXT}, "parameters": {"top_k": 2}}),
    ("feature-extraction", {"inputs": SENTENCES[3], "parameters": {}}),
    ("summarization", {"inputs": SENTENCES[0], "parameters": {"max_new_tokens": 6}}),
    ("translation", {"inputs": [SENTENCES[1], SENTENCES[2]], "parameters": {"max_new_tokens": 5, "num_beams": 2}}),
    ("text2text-generation", {"inputs": SENTENCES[2], "parameters": {"max_new_tokens": 4}}),
]


def _bart(root, tokenizers) -> str:
    """A tiny BART with the byte-level BPE of the tests, for the sequence-to-sequence tasks."""
    import json
    import shutil

    import torch

    from .reference import randomize, transformers

    tf = transformers()
    cfg = tf.BartConfig(vocab_size=905, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64)
    torch.manual_seed(0)
    model = tf.BartForConditionalGeneration(cfg).eval()
    randomize(model, seed=3, std=0.3)
    model.tie_weights()
    folder = root / "bart"
    model.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizers["bpe"] / name, folder / name)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BartTokenizer",
                                                               "model_max_length": 64}))
    return str(folder)


@pytest.fixture(scope="module")
def served(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("tasks")
    tokenizers = train_tokenizers(root / "tokenizers")
    heads = {"text-classification": "sequence-classification", "token-classification": "token-classification",
             "question-answering": "question-answering", "feature-extraction": "masked-lm"}
    models = {task: str(build_model(root, tokenizers, "bert", head)) for task, head in heads.items()}
    bart = _bart(root, tokenizers)
    models |= {task: bart for task in ("summarization", "translation", "text2text-generation")}
    config = ServerConfig(model=str(build_chat_model(root / "llama")), task_models=models)
    with running(config) as served:
        yield served, models


@pytest.mark.parametrize("task, body", CASES, ids=[c[0] for c in CASES])
def test_a_task_route_answers_as_the_pipeline(served, task, body):
    server, models = served
    expected = lmatlas.pipeline(task, models[task])(body["inputs"], **body["parameters"])
    shared = list(models.values()).count(models[task]) > 1
    for name in (task,) if shared else (task, models[task]):
        response = httpx.post(f"{server.url}/models/{name}", json=body, timeout=60)
        assert response.status_code == 200, response.text
        assert_same(expected, response.json())
    if shared:  # one model for three tasks: its name alone does not say which
        response = httpx.post(f"{server.url}/models/{models[task]}", json=body, timeout=60)
        assert response.status_code == 400 and "serves several tasks" in response.json()["error"]["message"]


def test_a_bad_task_input_is_a_400_naming_it(served):
    server, _ = served
    response = httpx.post(f"{server.url}/models/question-answering", json={"inputs": "no context"}, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "the input has no context; question-answering needs a question and a context"
    response = httpx.post(f"{server.url}/models/fill-mask", json={"inputs": "a [MASK]"}, timeout=60)
    assert response.status_code == 404 and "--task-model fill-mask=MODEL" in response.json()["error"]["message"]
    unknown = httpx.post(f"{server.url}/models/text-classification", json={"inputs": "x", "parameters": {"bogus": 1}})
    assert unknown.status_code == 400 and "bogus" in unknown.json()["error"]["message"]
