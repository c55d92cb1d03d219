"""Generation with text: the real GPT-2 byte-level BPE files, stop strings, streaming, chat.

A GPT-2 of real vocabulary size (50,257) but tiny width is written by transformers beside the
real GPT-2 tokenizer files from tests/data/gpt2-tokenizer.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lmatlas
from lmatlas.tokenizer import load_tokenizer

from .paths import data_file
from .reference import randomize, transformers


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    tf = transformers()
    folder = tmp_path_factory.mktemp("gpt2-text")
    config = tf.GPT2Config(vocab_size=50257, n_positions=64, n_embd=48, n_layer=2, n_head=4)
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(config).eval()
    randomize(model, seed=5, std=0.3)
    model.tie_weights()
    model.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(data_file("gpt2-tokenizer", name), folder / name)
    return folder


@pytest.fixture(scope="module")
def pair(gpt2_folder):
    tf = transformers()
    ref = tf.GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()
    hf_tok = tf.GPT2TokenizerFast.from_pretrained(gpt2_folder)
    return ref, hf_tok, lmatlas.load(gpt2_folder), load_tokenizer(gpt2_folder)


def test_gpt2_tokenizer_ids_match_on_real_text(pair):
    _, hf_tok, _, tok = pair
    text = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:20000]
    for chunk in [text[i : i + 2000] for i in range(0, len(text), 2000)] + ["naïve café — “quotes” 🤖 don't"]:
        assert tok.encode(chunk) == hf_tok.encode(chunk)


def _prompt(tok, text="First Citizen:\nBefore we proceed any further, hear me speak."):
    return torch.tensor([tok.encode(text)])


def test_stop_strings_match_transformers(pair):
    ref, hf_tok, ours, tok = pair
    ids = _prompt(tok)
    free = ours.generate(ids, max_new_tokens=20)
    new = free[0, ids.shape[1] :].tolist()
    # A stop string that straddles the boundary of the 6th and 7th new tokens.
    a, b = tok.decode(new[:6]), tok.decode(new[:7])
    stop = a[-2:] + b[len(a) : len(a) + 1] if len(b) > len(a) else b[-3:]
    for stops in ([stop], [stop, "zzzz-never"]):
        kw = dict(max_new_tokens=20, stop_strings=stops, do_sample=False)
        got = ours.generate(ids, tokenizer=tok, **kw)
        with torch.no_grad():
            expected = ref.generate(ids, attention_mask=torch.ones_like(ids), tokenizer=hf_tok, **kw)
        assert torch.equal(got, expected), (stops, got, expected)
        assert got.shape[1] < free.shape[1]


def test_stream_yields_the_generated_text(pair):
    _, _, ours, tok = pair
    ids = _prompt(tok)
    out = ours.generate(ids, max_new_tokens=15)
    pieces = list(lmatlas.stream(ours, tok, "First Citizen:\nBefore we proceed any further, hear me speak.", max_new_tokens=15))
    assert len(pieces) > 1
    assert "".join(pieces) == tok.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=True)


def test_streamer_protocol(pair):
    _, _, ours, tok = pair
    ids = _prompt(tok)

    class Collect:
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, value):
            self.puts.append(value)

        def end(self):
            self.ended = True

    c = Collect()
    out = ours.generate(ids, max_new_tokens=5, streamer=c)
    assert c.ended and torch.equal(c.puts[0], ids)
    assert [int(p) for p in c.puts[1:]] == out[0, ids.shape[1] :].tolist()


def test_seeded_sampling_text_is_reproducible(pair):
    _, _, ours, tok = pair
    kw = dict(max_new_tokens=12, do_sample=True, temperature=0.8, top_p=0.95, seed=11)
    a = "".join(lmatlas.stream(ours, tok, "To be, or not", **kw))
    b = "".join(lmatlas.stream(ours, tok, "To be, or not", **kw))
    assert a == b and a


def test_batched_prompts_left_padded_equal_one_by_one(pair):
    _, _, ours, tok = pair
    texts = ["Hello", "A much longer prompt, with several more words in it", "Be brief"]
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    batch = tok(texts, padding=True, return_tensors="pt")
    out = ours.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=8, pad_token_id=tok.eos_token_id)
    width = batch["input_ids"].shape[1]
    for i, text in enumerate(texts):
        one = _prompt(tok, text)
        alone = ours.generate(one, max_new_tokens=8)
        assert out[i, width:].tolist() == alone[0, one.shape[1] :].tolist()


def test_chat_template_rendering(gpt2_folder, tmp_path):
    from lmatlas.chat import apply_chat_template

    folder = tmp_path / "chat"
    shutil.copytree(gpt2_folder, folder)
    template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": template, "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"})
    )
    tok, hf_tok = load_tokenizer(folder), transformers().AutoTokenizer.from_pretrained(folder)
    hi = [{"role": "user", "content": "Hi"}]
    text = apply_chat_template(tok, hi, add_generation_prompt=True)
    assert text == "<|user|>Hi<|endoftext|><|assistant|>"
    assert text == hf_tok.apply_chat_template(hi, tokenize=False, add_generation_prompt=True)
    # Continuing the assistant's message: the text stops inside it, before its end token.
    prefilled = hi + [{"role": "assistant", "content": "Hello, "}]
    text = apply_chat_template(tok, prefilled, continue_final_message=True)
    assert text == hf_tok.apply_chat_template(prefilled, tokenize=False, continue_final_message=True)
    assert text.endswith("<|assistant|>Hello, ")


def test_chat_templates_are_read_where_transformers_reads_them(gpt2_folder, tmp_path):
    folder = tmp_path / "named"
    shutil.copytree(gpt2_folder, folder)
    named = [{"name": "default", "template": "{{ messages[0]['content'] }}"},
             {"name": "short", "template": "{{ messages | length }}"}]
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    hf = transformers().AutoTokenizer.from_pretrained(folder)
    assert load_tokenizer(folder).chat_template == hf.chat_template == {t["name"]: t["template"] for t in named}
    # A chat_template.jinja file wins over tokenizer_config.json.
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m['role'] }}{% endfor %}")
    hf = transformers().AutoTokenizer.from_pretrained(folder)
    assert load_tokenizer(folder).chat_template == hf.chat_template == "{% for m in messages %}{{ m['role'] }}{% endfor %}"