"""text-generation against transformers.pipeline on a tiny GPT-2 with the real GPT-2 tokenizer.

Greedy decoding and beam search (token-identical to transformers); sampling is only checked
for its shape and its seed, since two libraries do not draw the same random numbers. The
tokenizers carry a chat template, so chats are compared too.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

import lmatlas

from .helpers_pipelines import assert_same, error, hf_pipeline  # noqa: F401
from .paths import data_file
from .reference import default_model_path, randomize, transformers

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["First Citizen:\nBefore we proceed any further,", "To be, or not to be", "The film"]

# The end token after each message shows that a continued final message is cut before it.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a play?"}]
PREFILLED = [{"role": "user", "content": "Name a city."}, {"role": "assistant", "content": "I would say"}]


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
        shutil.copy(data_file("gpt2-tokenizer", f), folder / f)
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
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
            "folders": (plain, configured),
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


CHAT_CASES = [
    (QUESTION, dict(do_sample=False, max_new_tokens=8)),
    ([QUESTION, PREFILLED], dict(do_sample=False, max_new_tokens=8)),
    (QUESTION, dict(do_sample=False, max_new_tokens=6, return_full_text=False)),
    (PREFILLED, dict(do_sample=False, max_new_tokens=8)),  # the assistant's message is continued
    (PREFILLED, dict(do_sample=False, max_new_tokens=6, num_beams=2)),
    ([PREFILLED, QUESTION], dict(do_sample=False, max_new_tokens=6, num_beams=2, num_return_sequences=2)),
    (PREFILLED, dict(do_sample=False, max_new_tokens=6, continue_final_message=False)),
    (QUESTION, dict(do_sample=False, max_new_tokens=6, continue_final_message=True)),
    (QUESTION, dict(do_sample=False, max_new_tokens=6, tokenizer_encode_kwargs={
        "chat_template": "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}{{ greeting }}{% endif %}",
        "greeting": "ASSISTANT:"})),  # another template, and a template variable
]


@pytest.mark.parametrize("case", range(len(CHAT_CASES)))
def test_chat(gpt2, case):
    hf, ours = gpt2["plain"]
    chat, options = CHAT_CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf(chat, **options)
    got = ours(chat, **options)
    assert_same(expected, got)
    records = got if isinstance(chat[0], dict) else [r for per_chat in got for r in per_chat]
    assert all(r["generated_text"] for r in records)  # not an empty answer by accident


def test_chat_ignores_the_prefix_but_keeps_its_length(gpt2):
    """A model's prefix goes before text prompts only; its tokens still count for max_length."""
    hf, ours = gpt2["configured"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf([QUESTION, PREFILLED], do_sample=False)
    assert_same(expected, ours([QUESTION, PREFILLED], do_sample=False))


def test_chat_with_a_loaded_model_and_its_tokenizer(gpt2):
    _, ours = gpt2["plain"]
    plain, _ = gpt2["folders"]
    loaded = lmatlas.pipeline("text-generation", lmatlas.load(plain), tokenizer=lmatlas.load_tokenizer(plain))
    assert loaded(QUESTION, do_sample=False, max_new_tokens=5) == ours(QUESTION, do_sample=False, max_new_tokens=5)


def test_chat_errors(gpt2, tmp_path):
    _, ours = gpt2["plain"]
    assert error(ours, [{"role": "user"}]) == (
        "message 0 of the chat has no 'content'; each message is a dict with 'role' and 'content'"
    )
    assert error(ours, [QUESTION, [{"content": "Hi"}]]) == (
        "input 1: message 0 of the chat has no 'role'; each message is a dict with 'role' and 'content'"
    )
    assert "not a single message (put it in a list)" in error(ours, QUESTION[1])
    plain, _ = gpt2["folders"]
    bare = tmp_path / "no-template"
    shutil.copytree(plain, bare)
    (bare / "tokenizer_config.json").unlink()
    pipe = lmatlas.pipeline("text-generation", bare)
    assert error(pipe, QUESTION, max_new_tokens=2) == (
        f"the tokenizer of {bare} has no chat template (no chat_template in tokenizer_config.json, "
        "no chat_template.jinja), so it cannot format chat messages"
    )
    assert pipe(PROMPTS[2], do_sample=False, max_new_tokens=2)[0]["generated_text"].startswith(PROMPTS[2])


def test_prompt_gets_the_tokenizers_special_tokens_unless_told(tmp_path):
    """transformers tokenizes a text prompt with the tokenizer's own default (special tokens
    added: here BERT's [CLS] ... [SEP]) unless add_special_tokens is given."""
    tf = transformers()
    folder = tmp_path / "bert-vocab-gpt2"
    cfg = tf.GPT2Config(vocab_size=30522, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=101,
                        eos_token_id=102, pad_token_id=0)
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(cfg).eval()
    randomize(model, seed=5, std=0.3)
    model.tie_weights()
    model.save_pretrained(folder)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_model_path() / f, folder / f)
    hf, ours = hf_pipeline("text-generation", folder), lmatlas.pipeline("text-generation", folder)
    for options in (dict(), dict(add_special_tokens=False), dict(add_special_tokens=True, return_full_text=False)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = hf(PROMPTS[2], do_sample=False, max_new_tokens=6, **options)
        assert_same(expected, ours(PROMPTS[2], do_sample=False, max_new_tokens=6, **options))
