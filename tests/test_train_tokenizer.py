"""`lmatlas tokenizer train`: every kind loads in lmatlas and transformers with the same ids."""

from __future__ import annotations

import json

import pytest

import lmatlas
from lmatlas.cli import main

from .paths import data_file
from .reference import transformers

TEXTS = ["ROMEO: But soft, what light through yonder window breaks?", "Thou art more lovely and more temperate.",
         "First Citizen:\nBefore we proceed any further, hear me speak."]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:60000], encoding="utf-8")
    return path


@pytest.mark.parametrize("kind,size", [("char", None), ("bpe", 400), ("byte-bpe", 400), ("wordpiece", 400),
                                       ("unigram", 400)])
def test_trained_tokenizer_loads_in_lmatlas_and_transformers(corpus, tmp_path, kind, size, capsys):
    tf = transformers()
    out = tmp_path / kind
    args = ["tokenizer", "train", "--data", str(corpus), "--kind", kind, "--out", str(out)]
    if size:
        args += ["--vocab-size", str(size)]
    assert main(args) == 0
    assert f"{kind} tokenizer" in capsys.readouterr().out
    ours = lmatlas.load_tokenizer(out)
    ref = tf.AutoTokenizer.from_pretrained(out)
    if size:
        assert len(ours) == size
    else:
        assert len(ours) == len(set(corpus.read_text(encoding="utf-8")))
    for text in TEXTS:
        ids = ours(text)["input_ids"]
        assert ids == ref(text)["input_ids"]
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)
        if kind in ("char", "byte-bpe", "bpe", "unigram"):
            assert ours.decode(ids, skip_special_tokens=True) == text  # lossless
    if kind == "wordpiece":
        assert ours.cls_token == "[CLS]" and ours.mask_token == "[MASK]" and ours.pad_token_id == 0
        assert ours(TEXTS[0])["input_ids"][0] == ours.cls_token_id
    if kind == "char":  # nanoGPT's stoi: the sorted characters
        chars = sorted(set(corpus.read_text(encoding="utf-8")))
        assert ours("ab")["input_ids"] == [chars.index("a"), chars.index("b")]


def test_special_tokens_option(corpus, tmp_path):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--data", str(corpus), "--kind", "char", "--out", str(out),
                 "--special-tokens", "<pad>,<mask>,<sep>"]) == 0
    tok = lmatlas.load_tokenizer(out)
    assert tok.pad_token == "<pad>" and tok.mask_token == "<mask>"
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["additional_special_tokens"] == ["<sep>"]


def test_bad_tokenizer_requests(corpus, tmp_path, capsys):
    assert main(["tokenizer", "train", "--data", str(corpus), "--kind", "bpe", "--out", str(tmp_path)]) == 1
    assert "--vocab-size is needed" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--data", str(tmp_path / "missing.txt"), "--kind", "char",
                 "--out", str(tmp_path)]) == 1
    assert "missing.txt: no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert main(["tokenizer", "train", "--data", str(empty), "--kind", "char", "--out", str(tmp_path)]) == 1
    assert "no text" in capsys.readouterr().err
