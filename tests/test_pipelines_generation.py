"""text-generation against transformers.pipeline on a tiny GPT-2 with the real GPT-2 tokenizer.

Greedy decoding and beam search (token-identical to transformers); sampling is only checked
for its shape and its seed, since two libraries do not draw the same random numbers.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

import lmatlas

from .helpers_pipelines import assert_same, hf_pipeline, one_thread  # noqa: F401
from .reference import randomize, shared_data, transformers

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["First Citizen:\nBefore we proceed any further,", "To be, or not to be", "The film"]


def _gpt2(root, name, **config):
    tf = transformers()
    folder = root / name
    cfg = tf.GPT2Config(vocab_size=50257, n_positions=96, n_embd=32, n_layer=2, n_head=4, **config)
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(cfg).eval()
    randomize(model, seed=11, std=0.3)
    model.tie_weights()
    if name == "configured":
        # generation_config.json sets a length, so the pipeline's 256 new tokens give way to it
        model.generation_config.max_length = 30
    model.save_pretrained(folder)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(shared_data("gpt2-tokenizer", f), folder / f)
    return folder


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    plain = _gpt2(root, "plain")
    configured = _gpt2(
        root, "configured", task_specific_params={"text-generation": {"max_length": 26, "prefix": "Hark! "}}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "plain": (hf_pipeline("text-generation", plain), lmatlas.pipeline("text-generation", plain)),
            "configured": (hf_pipeline("text-generation", configured), lmatlas.pipeline("text-generation", configured)),
        }


CASES = [
    dict(do_sample=False, max_new_tokens=12),
    dict(do_sample=False, max_new_tokens=6, return_full_text=False),
    dict(do_sample=False, max_new_tokens=8, num_beams=3, num_return_sequences=2),
    dict(do_sample=False, max_new_tokens=8, num_beams=2, repetition_penalty=1.3, no_repeat_ngram_size=2),
    dict(do_sample=False, max_new_tokens=10, prefix="Once upon a time, "),
    dict(do_sample=False, max_new_tokens=10, stop_sequence=" the"),
    dict(do_sample=False, max_new_tokens=5, return_tensors=True),
    dict(do_sample=False, max_new_tokens=5, min_new_tokens=5, skip_special_tokens=False, clean_up_tokenization_spaces=False),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_text_generation(gpt2, case):
    hf, ours = gpt2["plain"]
    options = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf(PROMPTS[0], **options)
        expected_list = hf(PROMPTS, **options)
    assert_same(expected, ours(PROMPTS[0], **options))
    assert_same(expected_list, ours(PROMPTS, **options))


def test_model_defaults_and_task_params(gpt2):
    """generation_config.json's max_length, then config.json's task_specific_params (max_length,
    prefix) decide the length when the call does not."""
    hf, ours = gpt2["configured"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf(PROMPTS, do_sample=False)
    got = ours(PROMPTS, do_sample=False)
    assert_same(expected, got)
    assert all(not r[0]["generated_text"].startswith("Hark") for r in got)


def test_sampling_with_a_seed(gpt2):
    _, ours = gpt2["plain"]
    first = ours(PROMPTS[1], max_new_tokens=8, seed=3, num_return_sequences=3)
    assert len(first) == 3 and all(r["generated_text"].startswith(PROMPTS[1]) for r in first)
    assert ours(PROMPTS[1], max_new_tokens=8, seed=3, num_return_sequences=3) == first


def test_max_length_counts_the_prompt(gpt2):
    """max_length replaces the default 256 new tokens (transformers keeps them and warns)."""
    _, ours = gpt2["plain"]
    [[out]] = ours([PROMPTS[2]], do_sample=False, max_length=9, return_tensors=True)
    assert len(out["generated_token_ids"]) == 9
