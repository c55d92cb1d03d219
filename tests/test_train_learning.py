"""Each objective lowers its loss in a few hundred steps of a tiny model on a small corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmatlas
from lmatlas.cli import main

from .paths import data_file

SMALL = ["--layers", "2", "--heads", "2", "--dim", "32", "--block", "32", "--batch-size", "8", "--lr", "2e-3",
         "--warmup", "10", "--dropout", "0", "--no-progress", "--eval-windows", "16", "--seed", "3"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    text = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:40000]
    path = tmp_path_factory.mktemp("data") / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _records(out: Path):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _lowered(out: Path, term: str = "loss", factor: float = 0.8) -> tuple[float, float]:
    train = [r[term] for r in _records(out) if r["split"] == "train"]
    first, last = sum(train[:10]) / 10, sum(train[-10:]) / 10
    assert last < factor * first, f"{term}: {first:.3f} -> {last:.3f}"
    return first, last


def test_gpt_causal_lm(corpus, tmp_path):
    out = tmp_path / "gpt"
    assert main(["train", "gpt", "--model", "gpt2", "--tokenizer", "char", "--data", str(corpus), "--out", str(out),
                 "--steps", "200", *SMALL]) == 0
    first, last = _lowered(out, factor=0.7)
    assert last < 2.8  # below the unigram entropy of the characters (~3.3 nats)
    assert lmatlas.load(out / "model").config.num_layers == 2


@pytest.fixture(scope="module")
def bert(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bert")
    args = ["train", "bert", "--model", "bert-base", "--tokenizer", "char", "--data", str(corpus),
            "--out", str(out), "--steps", "300", *SMALL, "--layers", "4", "--whole-word"]
    assert main(args) == 0
    return out


def test_bert_masked_lm(bert):
    _lowered(bert, factor=0.85)
    dev = [r for r in _records(bert) if r["split"] == "dev"][-1]
    assert dev["accuracy"] > 0.1
    model = lmatlas.load(bert / "model")
    assert model.head_name == "masked-lm" and model.config.num_layers == 4


def test_ernie_knowledge_masking(corpus, tmp_path):
    """ERNIE: the speakers' names and a few phrases of Coriolanus masked whole, on ERNIE 3.0's
    embeddings (task types included)."""
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("First Citizen\nSecond Citizen\nAll Citizens\nMenenius Agrippa\nCaius Marcius\n"
                       "the people\nthe senate\n", encoding="utf-8")
    out = tmp_path / "ernie"
    assert main(["train", "ernie", "--model", "ernie-3.0-base", "--tokenizer", "wordpiece", "--vocab-size", "600",
                 "--phrases", str(phrases), "--data", str(corpus), "--out", str(out), "--steps", "200",
                 *SMALL]) == 0
    _lowered(out, factor=0.92)  # words, not characters: from log(600) towards their unigram entropy
    # The phrases were found: dozens of units of several words each in the corpus.
    from lmatlas.training.data import PhraseUnits, load_stream

    tok = lmatlas.load_tokenizer(out / "tokenizer")
    units = PhraseUnits(tok, phrases.read_text().splitlines())
    merged = load_stream(tok, [corpus]).word_starts.sum() - load_stream(tok, [corpus], units=units).word_starts.sum()
    assert merged > 30
    model = lmatlas.load(out / "model")
    assert model.config.model_type == "ernie" and model.config.task_type_vocab_size == 3


def test_electra_replaced_token_detection(corpus, tmp_path):
    out = tmp_path / "electra"
    assert main(["train", "electra", "--model", "electra-base", "--tokenizer", "char", "--data", str(corpus),
                 "--out", str(out), "--steps", "200", *SMALL]) == 0
    _lowered(out, "mlm", factor=0.85)
    _lowered(out, "rtd", factor=0.85)
    disc = lmatlas.load(out / "model")
    gen = lmatlas.load(out / "model" / "generator")
    assert disc.head_name == "replaced-token-detection" and gen.head_name == "masked-lm"
    assert gen.config.hidden_size < disc.config.hidden_size
    # The two share their embeddings.
    assert (disc.backbone.embeddings.tokens.weight == gen.backbone.embeddings.tokens.weight).all()


def test_distilbert_distillation(bert, corpus, tmp_path):
    out = tmp_path / "distil"
    assert main(["train", "distillation", "--model", str(bert / "model"), "--data", str(corpus), "--out", str(out),
                 "--steps", "150", "--block", "32", "--batch-size", "8", "--lr", "1e-3", "--no-progress",
                 "--eval-windows", "16"]) == 0
    for term in ("kl", "cos"):
        _lowered(out, term, factor=0.95)
    student = lmatlas.load(out / "model")
    assert student.config.num_layers == 2


def test_alpaca_instruction_tuning(tmp_path):
    words = ["apple", "river", "stone", "cloud", "green", "music", "light", "table", "dream", "ocean"]
    rows = []
    for i in range(120):
        w = words[i % len(words)]
        if i % 2:
            rows.append({"instruction": "Write the word backwards.", "input": w, "output": w[::-1]})
        else:
            rows.append({"instruction": "Write the word in capitals.", "input": w, "output": w.upper()})
    data = tmp_path / "alpaca.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    text = tmp_path / "text.txt"
    from lmatlas.training.objectives import alpaca_prompt

    text.write_text("\n".join(alpaca_prompt(r["instruction"], r["input"]) + " " + r["output"] for r in rows))
    tok = tmp_path / "tok"
    assert main(["tokenizer", "train", "--data", str(text), "--kind", "byte-bpe", "--vocab-size", "350",
                 "--out", str(tok)]) == 0
    out = tmp_path / "alpaca"
    assert main(["train", "alpaca", "--model", "llama-7b", "--tokenizer", str(tok), "--data", str(data),
                 "--out", str(out), "--steps", "200", *SMALL, "--block", "96"]) == 0
    _lowered(out, factor=0.6)
    model = lmatlas.load(out / "model")
    assert model.config.model_type == "llama"


@pytest.mark.parametrize("objective,model", [("t5", "t5-small"), ("bart", "bart-base")])
def test_encoder_decoder_denoising(corpus, tmp_path, objective, model):
    """T5's span corruption and BART's sentence permutation + text infilling."""
    out = tmp_path / objective
    assert main(["train", objective, "--model", model, "--tokenizer", "char", "--data", str(corpus),
                 "--out", str(out), "--steps", "150", *SMALL]) == 0
    _lowered(out, factor=0.8)
    m = lmatlas.load(out / "model")
    assert m.is_encoder_decoder and m.config.model_type == model.split("-")[0]


def test_switch_transformer_span_corruption(corpus, tmp_path):
    """Switch Transformer: T5's span corruption with 4 experts in every other layer, the router's
    z-loss and load-balancing loss logged beside the cross-entropy and lowered with it."""
    out = tmp_path / "switch"
    assert main(["train", "t5", "--model", "switch-base-8", "--tokenizer", "char", "--data", str(corpus),
                 "--out", str(out), "--steps", "150", *SMALL]) == 0
    _lowered(out, factor=0.8)
    train = [r for r in _records(out) if r["split"] == "train"]
    # Load balance: 1 when the experts share tokens evenly, the number of experts at worst.
    assert all(0.9 < r["router_aux_loss"] < 8 for r in train)
    assert train[-1]["router_z_loss"] > 0
    m = lmatlas.load(out / "model")
    assert m.config.model_type == "switch_transformers" and m.config.num_experts == 8
