"""`lmatlas finetune`: classification (an encoder's and a decoder's), NER and QA on small
synthetic data, the fine-tuned checkpoint in transformers, the metrics, and bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import lmatlas
from lmatlas.cli import main
from lmatlas.save import save_model
from lmatlas.training import metrics as M
from lmatlas.training.models import build_model

from .paths import data_file
from .reference import default_model_path, transformers

NAMES = ["Smith", "Jones", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Thomas", "Roberts", "Walker"]
PLACES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Dublin", "Lisbon", "Oslo"]
GOOD = ["good", "great", "lovely", "fine", "superb"]
BAD = ["bad", "awful", "poor", "dull", "terrible"]
FILL = ["the", "film", "was", "quite", "and", "plot", "acting", "very", "really", "story"]
TAIL = ["--no-progress", "--seed", "1", "--warmup", "10"]


def _sentiment(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        words = [rng.choice(FILL) for _ in range(rng.randrange(3, 8))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if label else BAD))
        rows.append((" ".join(words), str(label)))
    return rows


def _ner(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sent = [(w, "O") for w in rng.sample(FILL, 3)]
        sent.insert(rng.randrange(len(sent) + 1), ("Mr", "O"))
        i = [w for w, _ in sent].index("Mr")
        sent.insert(i + 1, (rng.choice(NAMES), "B-PER"))
        sent += [("in", "O"), (rng.choice(PLACES), "B-LOC")]
        out.append(sent)
    return out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A small BERT from scratch, with a WordPiece tokenizer trained on the synthetic words."""
    root = tmp_path_factory.mktemp("tiny")
    text = root / "text.txt"
    words = NAMES + PLACES + GOOD + BAD + FILL + ["Mr", "in", "What", "is", "the", "capital", "of", "?", "."]
    text.write_text("\n".join(" ".join(words) for _ in range(5)), encoding="utf-8")
    tok_dir = root / "tokenizer"
    assert main(["tokenizer", "train", "--data", str(text), "--kind", "wordpiece", "--vocab-size", "200",
                 "--out", str(tok_dir), "--min-frequency", "1"]) == 0
    tok = lmatlas.load_tokenizer(tok_dir)
    torch.manual_seed(0)
    model = build_model("bert-base", "base", tok, 64, dict(num_layers=2, num_heads=2, hidden_size=32))
    folder = root / "bert"
    save_model(model, folder, tok_dir)
    return folder


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A small GPT-2 language model from scratch, with a byte-level BPE trained on the synthetic
    words: like GPT-2's, its only special token is <|endoftext|> (no pad token)."""
    root = tmp_path_factory.mktemp("tiny-gpt2")
    text = root / "text.txt"
    words = GOOD + BAD + FILL
    text.write_text("\n".join(" ".join(words) for _ in range(5)), encoding="utf-8")
    tok_dir = root / "tokenizer"
    assert main(["tokenizer", "train", "--data", str(text), "--kind", "byte-bpe", "--vocab-size", "300",
                 "--out", str(tok_dir), "--min-frequency", "1"]) == 0
    tok = lmatlas.load_tokenizer(tok_dir)
    assert tok.pad_token_id is None and tok.eos_token_id is not None
    torch.manual_seed(0)
    model = build_model("gpt2", "causal-lm", tok, 64, dict(num_layers=2, num_heads=2, hidden_size=32))
    folder = root / "gpt2"
    save_model(model, folder, tok_dir)
    return folder


def _write_tsv(path: Path, rows) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")
    return path


def _dev(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"dev"' in line]


def test_classify_learns_and_keeps_the_best_model(tiny_bert, tmp_path):
    train = _write_tsv(tmp_path / "train.tsv", _sentiment(400, 0))
    dev = _write_tsv(tmp_path / "dev.tsv", _sentiment(100, 1))
    out = tmp_path / "out"
    assert main(["finetune", "classify", "--model", str(tiny_bert), "--train", str(train), "--dev", str(dev),
                 "--out", str(out), "--epochs", "4", "--batch-size", "16", "--lr", "3e-3", *TAIL]) == 0
    dev_log = _dev(out)
    assert len(dev_log) == 4  # once per epoch
    assert max(r["accuracy"] for r in dev_log) >= 0.9
    model = lmatlas.load(out / "model")
    assert model.head_name == "sequence-classification" and model.config.id2label == {0: "0", 1: "1"}


def test_classify_fine_tunes_a_decoder(tiny_gpt2, tmp_path):
    """A decoder classifier reads each text at its last token: padding is the end-of-text token,
    which the saved config names as pad_token_id, so transformers reads the rows the same way."""
    tf = transformers()
    train = _write_tsv(tmp_path / "train.tsv", _sentiment(400, 0))
    dev = _write_tsv(tmp_path / "dev.tsv", _sentiment(100, 1))
    out = tmp_path / "out"
    assert main(["finetune", "classify", "--model", str(tiny_gpt2), "--train", str(train), "--dev", str(dev),
                 "--out", str(out), "--epochs", "4", "--batch-size", "16", "--lr", "3e-3", *TAIL]) == 0
    assert max(r["accuracy"] for r in _dev(out)) >= 0.9
    folder = out / "model"
    ours, tok = lmatlas.load(folder), lmatlas.load_tokenizer(folder)
    assert ours.head_name == "sequence-classification" and ours.is_decoder
    assert ours.config.pad_token_id == tok.eos_token_id
    assert ours.config.architectures == ["GPT2ForSequenceClassification"]
    ref, info = tf.AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    texts = ["the film was superb", "really dull and the plot was very very bad", "awful"]
    enc = tok(texts)["input_ids"]
    width = max(map(len, enc))
    ids = torch.tensor([e + [tok.eos_token_id] * (width - len(e)) for e in enc])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in enc])
    with torch.no_grad():
        got = ours(ids, attention_mask=mask).logits
        torch.testing.assert_close(got, ref.eval()(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)
    assert got.argmax(-1).tolist() == [1, 0, 0]


def test_classify_jsonl_and_csv_with_named_columns(tiny_bert, tmp_path):
    rows = _sentiment(40, 2)
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps({"text": s, "stars": "pos" if y == "1" else "neg"}) + "\n" for s, y in rows))
    csv = tmp_path / "dev.csv"
    csv.write_text("text,stars\n" + "".join(f"\"{s}, indeed\",{'pos' if y == '1' else 'neg'}\n" for s, y in rows))
    out = tmp_path / "out"
    assert main(["finetune", "classify", "--model", str(tiny_bert), "--train", str(jsonl), "--dev", str(csv),
                 "--out", str(out), "--steps", "3", "--batch-size", "8", "--text-column", "text",
                 "--label-column", "stars", *TAIL]) == 0
    assert lmatlas.load(out / "model").config.id2label == {0: "neg", 1: "pos"}


def test_labels_outside_the_label_set(tiny_bert, tmp_path, capsys):
    train = _write_tsv(tmp_path / "train.tsv", [("good film", "1"), ("bad film", "0")] * 4)
    dev = _write_tsv(tmp_path / "dev.tsv", [("good film", "1"), ("so so", "2")])
    assert main(["finetune", "classify", "--model", str(tiny_bert), "--train", str(train), "--dev", str(dev),
                 "--out", str(tmp_path / "o"), "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "dev.tsv, row 2: label '2' is not one of the training labels (0, 1)" in err
    bad_column = ["finetune", "classify", "--model", str(tiny_bert), "--train", str(train), "--out",
                  str(tmp_path / "o"), "--text-column", "review", "--steps", "1"]
    assert main(bad_column) == 1
    assert "no column 'review'" in capsys.readouterr().err


def test_fine_tuned_default_model_loads_in_transformers_with_the_same_logits(tmp_path):
    tf = transformers()
    rows = [line.split("\t") for line in data_file("sst2", "train.tsv").read_text().splitlines()[1:33]]
    train = _write_tsv(tmp_path / "train.tsv", [(s.strip(), y) for s, y in rows])
    out = tmp_path / "out"
    assert main(["finetune", "classify", "--model", str(default_model_path()), "--train", str(train),
                 "--out", str(out), "--steps", "2", "--batch-size", "8", "--lr", "1e-4", *TAIL]) == 0
    folder = out / "model"
    ref = tf.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ref_tok = tf.AutoTokenizer.from_pretrained(folder)
    ours, tok = lmatlas.load(folder), lmatlas.load_tokenizer(folder)
    texts = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés"]
    enc = tok(texts, padding=True, return_tensors="pt")
    ref_enc = ref_tok(texts, padding=True, return_tensors="pt")
    assert torch.equal(enc["input_ids"], ref_enc["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(ours(**enc).logits, ref(**ref_enc).logits, atol=1e-5, rtol=1e-5)
    # The fine-tuning changed the weights of the base model, not only the new head.
    base = lmatlas.load(default_model_path())
    assert not torch.equal(base.backbone.layers[0].attn.qkv.weight, ours.backbone.layers[0].attn.qkv.weight)


def _write_conll(path: Path, sentences) -> Path:
    path.write_text("-DOCSTART- -X- O O\n\n" + "\n\n".join("\n".join(f"{w} NN O {t}" for w, t in s) for s in sentences)
                    + "\n", encoding="utf-8")
    return path


def test_ner_learns_entities(tiny_bert, tmp_path):
    tf = transformers()
    train = _write_conll(tmp_path / "train.conll", _ner(300, 0))
    dev = _write_conll(tmp_path / "dev.conll", _ner(60, 1))
    out = tmp_path / "out"
    assert main(["finetune", "ner", "--model", str(tiny_bert), "--train", str(train), "--dev", str(dev),
                 "--out", str(out), "--epochs", "4", "--batch-size", "16", "--lr", "3e-3", *TAIL]) == 0
    best = max(r["f1"] for r in _dev(out))
    assert best > 0.9
    model = lmatlas.load(out / "model")
    assert set(model.config.id2label.values()) == {"O", "B-LOC", "B-PER"}
    ref = tf.AutoModelForTokenClassification.from_pretrained(out / "model").eval()
    ids = torch.tensor([lmatlas.load_tokenizer(out / "model")("Mr Smith in Paris")["input_ids"]])
    torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-5)


def _squad(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        place, name = rng.choice(PLACES), rng.choice(NAMES)
        context = f"Mr {name} lives in {place} . The capital of {name} is {place} ."
        start = context.rindex(place)
        paragraphs.append({"context": context, "qas": [{"id": f"q{i}", "question": f"What is the capital of {name} ?",
                                                         "answers": [{"text": place, "answer_start": start}]}]})
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}


def test_qa_learns_spans(tiny_bert, tmp_path):
    tf = transformers()
    train, dev = tmp_path / "train.json", tmp_path / "dev.json"
    train.write_text(json.dumps(_squad(300, 0)))
    dev.write_text(json.dumps(_squad(50, 1)))
    out = tmp_path / "out"
    assert main(["finetune", "qa", "--model", str(tiny_bert), "--train", str(train), "--dev", str(dev),
                 "--out", str(out), "--epochs", "4", "--batch-size", "16", "--lr", "3e-3", "--max-length", "64",
                 "--stride", "16", *TAIL]) == 0
    best = max(r["exact_match"] for r in _dev(out))
    assert best > 80
    ref = tf.AutoModelForQuestionAnswering.from_pretrained(out / "model").eval()
    ours = lmatlas.load(out / "model")
    ids = torch.tensor([lmatlas.load_tokenizer(out / "model")("What is the capital of Smith ?",
                                                             "Mr Smith lives in Rome .")["input_ids"]])
    torch.testing.assert_close(ours(ids).start_logits, ref(ids).start_logits, atol=1e-5, rtol=1e-5)


def test_seq2seq_needs_an_encoder_decoder(tiny_bert, tmp_path, capsys):
    train = _write_tsv(tmp_path / "t.tsv", [("a", "b")])
    assert main(["finetune", "seq2seq", "--model", str(tiny_bert), "--train", str(train), "--out", str(tmp_path)]) == 1
    assert "head 'seq2seq-lm' is not available for bert" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["t5-small", "bart-base"])
def test_seq2seq_learns_and_scores_rouge_l(tmp_path, preset):
    """Swap two words: a small T5 or BART from scratch, fine-tuned, scored by ROUGE-L."""
    tf = transformers()
    words = PLACES
    rng = random.Random(0)

    def rows(n):
        pairs = [rng.sample(words, 2) for _ in range(n)]
        return "".join(json.dumps({"text": f"{a} {b}", "summary": f"{b} {a}"}) + "\n" for a, b in pairs)

    (tmp_path / "train.jsonl").write_text(rows(400))
    (tmp_path / "dev.jsonl").write_text(rows(40))
    (tmp_path / "words.txt").write_text("\n".join(" ".join(words) for _ in range(3)))
    specials = "<pad>,</s>,<unk>" if preset.startswith("t5") else "<s>,<pad>,</s>,<unk>,<mask>"
    tok_dir = tmp_path / "tok"
    assert main(["tokenizer", "train", "--data", str(tmp_path / "words.txt"), "--kind", "wordpiece", "--vocab-size",
                 "60", "--min-frequency", "1", "--special-tokens", specials, "--out", str(tok_dir)]) == 0
    torch.manual_seed(0)
    base = build_model(preset, "seq2seq-lm", lmatlas.load_tokenizer(tok_dir), 32,
                       dict(num_layers=2, num_heads=2, hidden_size=32, dropout=0.0))
    save_model(base, tmp_path / "base", tok_dir)
    out = tmp_path / "out"
    assert main(["finetune", "seq2seq", "--model", str(tmp_path / "base"), "--train", str(tmp_path / "train.jsonl"),
                 "--dev", str(tmp_path / "dev.jsonl"), "--out", str(out), "--source-column", "text",
                 "--target-column", "summary", "--epochs", "6", "--batch-size", "16", "--lr", "3e-3",
                 "--max-new-tokens", "8", *TAIL]) == 0
    assert max(r["rougeL"] for r in _dev(out)) > 50
    ours = lmatlas.load(out / "model")
    ref = tf.AutoModelForSeq2SeqLM.from_pretrained(out / "model").eval()
    ids = torch.tensor([lmatlas.load_tokenizer(out / "model")("Paris Smith")["input_ids"]])
    start = torch.tensor([[ours.config.decoder_start_token_id]])
    torch.testing.assert_close(ours(ids, decoder_input_ids=start).logits, ref(input_ids=ids, decoder_input_ids=start).logits,
                               atol=1e-5, rtol=1e-5)
    assert torch.equal(ours.generate(ids, max_new_tokens=6), ref.generate(ids, max_new_tokens=6, do_sample=False))


def test_metrics():
    assert M.accuracy([1, 0, 1, 1], [1, 0, 0, 1]) == 0.75
    assert M.f1([1, 0, 1, 1], [1, 0, 0, 1], 2) == pytest.approx(0.8)
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O", "I-ORG"]
    assert M.chunks(tags) == {("PER", 0, 2), ("LOC", 3, 6), ("ORG", 7, 8)}
    pred = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O", "I-ORG"]
    scores = M.entity_scores([pred], [tags])
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert M.exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert M.token_f1("in the city of Paris", ["Paris"]) == pytest.approx(0.4)  # "the" is dropped: 1 of 4
    assert M.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert M.rouge_l("", "something") == 0.0
