"""text-classification and zero-shot NLI on a decoder classifier against transformers.pipeline.

A tiny random-weight GPT2ForSequenceClassification with the real GPT-2 tokenizer (which has no
pad token): with the usual pad_token_id = the end-of-text token, which the text may also hold
(once more with a tokenizer that pads with another token), and without a pad token.
transformers runs one text at a time; lmatlas batches them, padded with the model's pad token,
or runs them one at a time when there is none.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lmatlas

from .helpers_pipelines import (
    NLI_LABELS,
    SENTENCES,
    SENTIMENT_LABELS,
    hf_pipeline,
    same,
)
from .paths import data_file
from .reference import randomize, transformers
from .test_pipelines_parity import OPTIONS_CLS

pytestmark = pytest.mark.usefixtures("one_thread")

EOT = 50256  # <|endoftext|>
PAIR = {"text": SENTENCES[3], "text_pair": "It was boring, but the acting is superb."}
# The end-of-text token inside and at the end of a text: with it as the pad token, the text is
# read at its last other token.
WITH_EOT = ["A quietly devastating portrait of grief.<|endoftext|>", "Boring.<|endoftext|> Superb!"]


def _gpt2_classifier(root, name: str, id2label: dict, seed: int, tokenizer_pad: str | None = None, **config):
    tf = transformers()
    cfg = tf.GPT2Config(vocab_size=50257, n_positions=96, n_embd=32, n_layer=2, n_head=4, id2label=id2label,
                        label2id={v: k for k, v in id2label.items()}, **config)
    torch.manual_seed(0)
    model = tf.GPT2ForSequenceClassification(cfg).eval()
    randomize(model, seed=seed, std=0.3)
    with torch.no_grad():  # norm biases shared by every token would make one label win everywhere
        for pname, p in model.named_parameters():
            if pname.endswith("bias") and ".ln_" in pname:
                p.zero_()
    folder = root / name
    model.save_pretrained(folder)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(data_file("gpt2-tokenizer", f), folder / f)
    if tokenizer_pad is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": tokenizer_pad}))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder-classifiers")
    return {
        "eot-pad": _gpt2_classifier(root, "eot-pad", SENTIMENT_LABELS, seed=4, pad_token_id=EOT),
        # The tokenizer pads with "!" (token 0), the model's pad token is the end of text.
        "tokenizer-pad": _gpt2_classifier(root, "tokenizer-pad", SENTIMENT_LABELS, seed=4, tokenizer_pad="!",
                                          pad_token_id=EOT),
        "no-pad": _gpt2_classifier(root, "no-pad", SENTIMENT_LABELS, seed=6),
        "nli": _gpt2_classifier(root, "nli", NLI_LABELS, seed=9, pad_token_id=EOT),
    }


@pytest.mark.parametrize("kind", ["eot-pad", "tokenizer-pad", "no-pad"])
def test_text_classification(folders, kind):
    hf, ours = hf_pipeline("text-classification", folders[kind]), lmatlas.pipeline("text-classification", folders[kind])
    assert ours.model.head_name == "sequence-classification" and ours.model.is_decoder
    gap = 0.0
    for options in OPTIONS_CLS:
        gap = max(gap, same(hf, ours, SENTENCES[0], **options))
        gap = max(gap, same(hf, ours, SENTENCES + WITH_EOT, **options))
        gap = max(gap, same(hf, ours, PAIR, **options))
        gap = max(gap, same(hf, ours, [PAIR, {"text": SENTENCES[1]}], **options))
    # Labels that differ between texts: the rows are not all read at one position.
    labels = {r["label"] for r in ours(SENTENCES + WITH_EOT)}
    assert len(labels) > 1, labels
    print(f"{kind}: max score gap {gap:.2e}")


def test_zero_shot_nli(folders):
    hf = hf_pipeline("zero-shot-classification", folders["nli"])
    ours = lmatlas.pipeline("zero-shot-classification", folders["nli"])
    labels = ["cinema", "cooking", "travel"]
    same(hf, ours, SENTENCES[0], candidate_labels=labels)
    same(hf, ours, SENTENCES[:3], candidate_labels=labels, multi_label=True)
