"""A model trained from preferences leaves as GGUF: `lmatlas convert` writes the folder that
`lmatlas train dpo` (or an online method) saved, and the file reads back — in lmatlas and in
transformers — as the same model, with the same tokenizer and chat template."""

from __future__ import annotations

import pytest
import torch

import lmatlas
from lmatlas.cli import main

from .reference import require, transformers
from .test_train_preferences import REWARDS, TAIL, _decoder, _pairs, _prompts

TOL = 1e-4
TEXTS = ["say red blue", "the cat and the dog"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _decoder(tmp_path_factory.mktemp("tiny-llama-gguf"))


@pytest.mark.parametrize("method", ["dpo", "grpo"])
def test_trained_model_converts_to_gguf(tiny, tmp_path, method):
    out = tmp_path / method
    if method == "dpo":
        data, extra = _pairs(tmp_path / "pairs.jsonl", 12), []
    else:
        data = _prompts(tmp_path / "prompts.jsonl", 6)
        extra = ["--reward", f"{REWARDS}:word_reward", "--group", "2", "--max-new-tokens", "4"]
    assert main(["train", method, "--model", str(tiny), "--data", str(data), "--out", str(out), "--steps", "2",
                 "--lr", "1e-2", *extra, *TAIL]) == 0
    trained = out / "model"
    gguf_file = tmp_path / f"{method}.gguf"
    assert main(["convert", str(trained), "--to", "gguf", "--dtype", "f32", "-o", str(gguf_file)]) == 0

    folder, converted = lmatlas.load(trained).eval(), lmatlas.load(gguf_file).eval()
    ids = torch.randint(3, folder.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with torch.no_grad():
        want = folder(ids, attention_mask=mask).logits
        got = converted(ids, attention_mask=mask).logits
        # training moved the weights: the file holds the trained model, not the one it started from
        start = lmatlas.load(tiny).eval()(ids, attention_mask=mask).logits
    keep = mask.bool()
    assert (got - want)[keep].abs().max() <= TOL
    assert (start - want)[keep].abs().max() > 1e-3

    # transformers reads the file as the same model
    require("gguf")
    ref = transformers().AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf_file.name).eval()
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=mask).logits
    assert (theirs - want)[keep].abs().max() <= TOL

    tokenizer, before = lmatlas.load_tokenizer(gguf_file), lmatlas.load_tokenizer(trained)
    assert tokenizer(TEXTS)["input_ids"] == before(TEXTS)["input_ids"]
    assert tokenizer.chat_template == before.chat_template
