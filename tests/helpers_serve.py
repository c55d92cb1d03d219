"""Models for the server's tests: a tiny random-weight Llama that transformers writes, with the
real GPT-2 tokenizer files and a small chat template, and a tiny masked language model with
all-MiniLM-L6-v2's vocabulary (for the fill-mask route)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch

import lmatlas
from lmatlas.chat import apply_chat_template

from .paths import data_file
from .reference import default_model_path, randomize, transformers

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def build_chat_model(folder: Path, positions: int = 256) -> Path:
    tf = transformers()
    cfg = tf.LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
                         bos_token_id=50256, eos_token_id=50256)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg).eval()
    randomize(model, seed=3, std=0.3)
    model.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(data_file("gpt2-tokenizer", name), folder / name)
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    return folder


def build_masked_lm(folder: Path) -> Path:
    tf = transformers()
    cfg = tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=128)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tf.BertForMaskedLM(cfg).eval()
    randomize(model, seed=1, std=0.3)
    model.save_pretrained(folder)
    source = default_model_path()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


def build_all(root: Path) -> dict[str, Path]:
    """The chat model, the masked language model and a search index over two small documents."""
    from lmatlas.search import Index

    docs = root / "docs"
    docs.mkdir()
    (docs / "cats.md").write_text("# Cats\n\nCats sleep most of the day and purr when content.\n")
    (docs / "rockets.md").write_text("# Rockets\n\nA rocket burns fuel to push itself into orbit.\n")
    index = root / "index"
    Index(index).build([docs])
    return {"chat": build_chat_model(root / "llama"), "mlm": build_masked_lm(root / "mlm"), "index": index}


def greedy_reply(folder, messages: list[dict], max_new_tokens: int) -> str:
    """What generate() answers to ``messages`` greedily: the reference for the server's replies."""
    model, tok = _loaded(str(folder))
    text = apply_chat_template(tok, messages, add_generation_prompt=True)
    ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)


_LOADED: dict = {}


def _loaded(folder: str):
    if folder not in _LOADED:
        _LOADED[folder] = (lmatlas.load(folder, head="causal-lm"), lmatlas.load_tokenizer(folder))
    return _LOADED[folder]
