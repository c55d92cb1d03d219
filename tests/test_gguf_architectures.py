"""The GGUF architectures beside llama (qwen2, gpt2, bloom, falcon): small random models of
unusual shapes, written with ``gguf.GGUFWriter`` as llama.cpp's converter stores them (GPT-2's
projections transposed, BLOOM's fused q/k/v regrouped), read by lmatlas and by transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lmatlas
from lmatlas import LmatlasError

from .reference import randomize, require, transformers
from .test_gguf_written import finish

TOL = 1e-4
VOCAB, HIDDEN, HEADS, LAYERS = 83, 48, 6, 2  # head size 8


def _qwen2(tf, tied):
    return tf.Qwen2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=80, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=64, rope_theta=5000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=tied,
    ), tf.Qwen2ForCausalLM  # fmt: skip


def _gpt2(tf, tied):
    # n_positions 1024: transformers builds that many positions whatever the file's context length.
    return tf.GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=1024, layer_norm_epsilon=1e-5,
        tie_word_embeddings=tied,
    ), tf.GPT2LMHeadModel  # fmt: skip


def _bloom(tf, tied):
    return tf.BloomConfig(vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS), tf.BloomForCausalLM


def _falcon(tf, tied):
    # transformers' GGUF Falcon: one key/value head, parallel attention, no biases, MLP 4 x hidden.
    return tf.FalconConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        multi_query=True, parallel_attn=True, bias=False, max_position_embeddings=64, rope_theta=5000.0,
    ), tf.FalconForCausalLM  # fmt: skip


def _llama_names(i):
    return {f"model.layers.{i}.{theirs}": f"blk.{i}.{ours}" for ours, theirs in dict(
        attn_norm="input_layernorm", attn_q="self_attn.q_proj", attn_k="self_attn.k_proj",
        attn_v="self_attn.v_proj", attn_output="self_attn.o_proj", ffn_norm="post_attention_layernorm",
        ffn_gate="mlp.gate_proj", ffn_up="mlp.up_proj", ffn_down="mlp.down_proj").items()}  # fmt: skip


def _qwen2_tensors(state):
    out = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
    out = {theirs: ours for ours, theirs in out.items()}
    for i in range(LAYERS):
        out |= _llama_names(i)
    return out, {}


def _gpt2_tensors(state):
    names = {"transformer.wte": "token_embd", "transformer.wpe": "position_embd", "transformer.ln_f": "output_norm",
             "lm_head": "output"}  # fmt: skip
    transposed = set()
    for i in range(LAYERS):
        layer = dict(ln_1="attn_norm", **{"attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
                     "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}, ln_2="ffn_norm")  # fmt: skip
        for theirs, ours in layer.items():
            names[f"transformer.h.{i}.{theirs}"] = f"blk.{i}.{ours}"
            if theirs.startswith(("attn.", "mlp.")):
                transposed.add(f"transformer.h.{i}.{theirs}.weight")
    return names, {name: lambda w: w.T for name in transposed}


def _qkv_split(w):
    """BLOOM's per-head q/k/v as llama.cpp's converter stores it: [all q; all k; all v]."""
    return w.reshape(HEADS, 3, HIDDEN // HEADS, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)


def _h_tensors(kind):
    def names_of(state):
        names = {"transformer.word_embeddings": "token_embd", "transformer.ln_f": "output_norm"}
        if kind == "bloom":
            names["transformer.word_embeddings_layernorm"] = "token_embd_norm"
        rearrange = {}
        for i in range(LAYERS):
            layer = {"input_layernorm": "attn_norm", "self_attention.query_key_value": "attn_qkv",
                     "self_attention.dense": "attn_output", "mlp.dense_h_to_4h": "ffn_up",
                     "mlp.dense_4h_to_h": "ffn_down"}  # fmt: skip
            if kind == "bloom":
                layer["post_attention_layernorm"] = "ffn_norm"
                for part in ("weight", "bias"):
                    rearrange[f"transformer.h.{i}.self_attention.query_key_value.{part}"] = _qkv_split
            names |= {f"transformer.h.{i}.{theirs}": f"blk.{i}.{ours}" for theirs, ours in layer.items()}
        return names, rearrange

    return names_of


ARCHS = {
    "qwen2": (_qwen2, _qwen2_tensors, False),
    "gpt2": (_gpt2, _gpt2_tensors, False),
    "bloom": (_bloom, _h_tensors("bloom"), True),
    "falcon": (_falcon, _h_tensors("falcon"), True),
}


def reference(arch):
    build, _, tied = ARCHS[arch]
    config, cls = build(transformers(), tied)
    torch.manual_seed(0)
    model = cls(config).eval()
    randomize(model, seed=3)
    model.tie_weights()
    return model


def gguf_tensors(arch, model) -> dict[str, np.ndarray]:
    names, rearrange = ARCHS[arch][1](None)
    out = {}
    for name, value in model.state_dict().items():
        stem, part = name.rsplit(".", 1)
        if stem not in names or (stem == "lm_head" and model.config.tie_word_embeddings):
            continue
        w = value.detach().numpy()
        if name in rearrange:
            w = rearrange[name](w)
        out[f"{names[stem]}.{part}"] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def write(path, arch, model, kv_heads=None, extra=None):
    gguf = require("gguf")
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_embedding_length(HIDDEN)
    writer.add_head_count(HEADS)
    writer.add_context_length(1024 if arch == "gpt2" else 64)
    if arch in ("qwen2", "falcon"):
        writer.add_rope_freq_base(5000.0)
    if arch == "qwen2":
        writer.add_feed_forward_length(cfg.intermediate_size)
        writer.add_head_count_kv(cfg.num_key_value_heads)
        writer.add_layer_norm_rms_eps(1e-5)
    else:
        writer.add_feed_forward_length(4 * HIDDEN)
        writer.add_layer_norm_eps(1e-5)
    if arch == "falcon":
        writer.add_head_count_kv(kv_heads or 1)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])  # gives the vocabulary size
    for name, w in (gguf_tensors(arch, model) | (extra or {})).items():
        writer.add_tensor(name, w)
    finish(writer)
    return path


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archs")
    cache = {}

    def get(arch):
        if arch not in cache:
            model = reference(arch)
            cache[arch] = model, write(folder / f"{arch}.gguf", arch, model)
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", list(ARCHS))
def test_logits_against_transformers(written, arch):
    model, path = written(arch)
    ref = transformers().AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    ours = lmatlas.load(path)
    assert ours.config.model_type == arch
    ids = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 6:] = mask[2, 3:] = 0
    with torch.no_grad():
        got, expected = ours(ids, attention_mask=mask).logits, ref(input_ids=ids, attention_mask=mask).logits
        # and the reference read the file as the model it was written from
        assert (expected - model(input_ids=ids, attention_mask=mask).logits)[mask.bool()].abs().max() <= TOL
    diff = (got - expected)[mask.bool()].abs().max().item()
    print(f"{arch}: max abs logit diff {diff:.2e}")
    assert diff <= TOL
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    one = torch.ones_like(ids[:1])
    assert torch.equal(ours.generate(ids[:1], one, **kw), ref.generate(input_ids=ids[:1], attention_mask=one, **kw))


def test_falcon_40b_layout_refused(written, tmp_path):
    model, _ = written("falcon")
    path = write(tmp_path / "falcon40.gguf", "falcon", model, kv_heads=2)
    with pytest.raises(LmatlasError, match=r"falcon40\.gguf: a Falcon with 2 key/value heads or two norms per layer"):
        lmatlas.load(path)


def test_tied_architectures_skip_the_output_copy(written, tmp_path):
    """llama.cpp's converter stores a copy of BLOOM's embeddings as output.weight; transformers
    ties the head to the embeddings all the same, and so does lmatlas."""
    model, path = written("bloom")
    copy = write(tmp_path / "copy.gguf", "bloom", model, extra={"output.weight": np.zeros((VOCAB, HIDDEN), np.float32)})
    ids = torch.tensor([[4, 8, 15, 16, 23]])
    assert torch.equal(lmatlas.load(copy)(ids).logits, lmatlas.load(path)(ids).logits)


def _trained(pre: str, specials: list[str]):
    """A byte-level BPE trained here on Shakespeare, split as ``pre`` names: (its tokenizers
    pipeline, its tokens by id, its merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lmatlas.gguf.tokenizer import PRE_TOKENIZERS

    from .paths import data_file

    lines = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines()[:3000]
    lines += ["1,000,000 dollars for 3,5 things in 1603 and 2024, 12345678"] * 20  # numbers to merge
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = PRE_TOKENIZERS[pre]()
    trained.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    trained.train_from_iterator(lines, trainer)
    spec = json.loads(trained.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    return trained, sorted(spec["vocab"], key=spec["vocab"].get), merges


def _texts():
    from .helpers_tokenizer import HAND_CASES, sst2_sentences
    from .paths import data_file

    lines = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines()
    extra = ["don't 12345 e\u0301t\u00e9\r\n\n  x (word) 'Tis", "<|im_start|>hi<|im_end|>"]
    return lines[5000:5100] + sst2_sentences(100) + HAND_CASES + extra


@pytest.mark.parametrize("pre, arch", [("qwen2", "qwen2"), ("llama-bpe", "llama")])
def test_split_tokenizers(tmp_path, pre, arch):
    """Byte-level BPE split as Qwen2 (``tokenizer.ggml.pre`` = qwen2: NFC, then Qwen2's pattern)
    or Llama 3 (llama-bpe: digits by three), the vocabulary trained here: ids as transformers'
    (Qwen2: from the GGUF file; Llama 3: from a tokenizer.json of the same pipeline, which
    transformers 4.57.6 does not build from GGUF); ``convert`` writes the split back by name."""
    from lmatlas.gguf import write_gguf

    gguf = require("gguf")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trained, tokens, merges = _trained(pre, specials)
    writer = gguf.GGUFWriter(str(tmp_path / "split.gguf"), arch)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in specials else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_add_bos_token(False)
    finish(writer)

    texts = _texts()
    ours = lmatlas.load_tokenizer(tmp_path / "split.gguf")
    if pre == "qwen2":
        ref = transformers().AutoTokenizer.from_pretrained(tmp_path, gguf_file="split.gguf")
    else:
        trained.add_special_tokens(specials)
        ref = transformers().PreTrainedTokenizerFast(tokenizer_object=trained)
    got = ours(texts)["input_ids"]
    assert got == ref(texts)["input_ids"]
    assert [ours.decode(ids) for ids in got[-30:]] == [ref.decode(ids) for ids in got[-30:]]

    config = transformers().Qwen2Config(vocab_size=len(tokens), hidden_size=32, intermediate_size=48,
                                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    transformers().Qwen2ForCausalLM(config).save_pretrained(tmp_path / "model")
    out = write_gguf(lmatlas.load(tmp_path / "model"), tmp_path / "again.gguf", tokenizer=ours)
    assert gguf.GGUFReader(out).fields["tokenizer.ggml.pre"].contents() == pre
    assert lmatlas.load_tokenizer(out)(texts)["input_ids"] == got
