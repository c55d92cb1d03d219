"""GGUF files the tests write with ``gguf.GGUFWriter``: a small random Llama stored as llama.cpp's
converter stores it (q and k rows permuted, some tensors quantized to Q8_0), read back by lmatlas
and by transformers; and the bad files, each one clear sentence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lmatlas
from lmatlas import LmatlasError

from .reference import randomize, require, transformers

TOL = 1e-4
HEADS, KV_HEADS, HIDDEN, LAYERS, FFN = 4, 2, 64, 2, 96
QUANTIZED = ("attn_q", "attn_v", "ffn_up", "ffn_down")  # Q8_0 (rows of 64 and 96: whole blocks of 32)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]


def vocabulary() -> list[str]:
    from tokenizers import pre_tokenizers

    merged = ["".join(m.split(" ")) for m in MERGES]
    return SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()) + merged


def reference_model(vocab_size: int, tied: bool):
    tf = transformers()
    config = tf.LlamaConfig(
        vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=64, rope_theta=5000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config).eval()
    randomize(model, seed=5)
    model.tie_weights()
    return model


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter: each head's rotary halves interleaved."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model) -> dict[str, np.ndarray]:
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {"token_embd.weight": state["model.embed_tokens.weight"], "output_norm.weight": state["model.norm.weight"]}
    if not model.config.tie_word_embeddings:
        out["output.weight"] = state["lm_head.weight"]
    names = dict(attn_norm="input_layernorm", attn_q="self_attn.q_proj", attn_k="self_attn.k_proj",
                 attn_v="self_attn.v_proj", attn_output="self_attn.o_proj", ffn_norm="post_attention_layernorm",
                 ffn_gate="mlp.gate_proj", ffn_up="mlp.up_proj", ffn_down="mlp.down_proj")  # fmt: skip
    for i in range(LAYERS):
        for ours, theirs in names.items():
            w = state[f"model.layers.{i}.{theirs}.weight"]
            if ours in ("attn_q", "attn_k"):
                w = permute(w, HEADS if ours == "attn_q" else KV_HEADS)
            out[f"blk.{i}.{ours}.weight"] = w
    return out


def write(path, model=None, architecture="llama", tokenizer=True, template=None, extra=None, pre="default"):
    gguf = require("gguf")
    writer = gguf.GGUFWriter(str(path), architecture)
    if model is not None:
        writer.add_context_length(64)
        writer.add_block_count(LAYERS)
        writer.add_embedding_length(HIDDEN)
        writer.add_feed_forward_length(FFN)
        writer.add_head_count(HEADS)
        writer.add_head_count_kv(KV_HEADS)
        writer.add_rope_dimension_count(HIDDEN // HEADS)
        writer.add_rope_freq_base(5000.0)
        writer.add_layer_norm_rms_eps(1e-5)
    if tokenizer:
        tokens = vocabulary()
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
        writer.add_token_merges(MERGES)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_pad_token_id(2)
        writer.add_add_bos_token(True)
        if template:
            writer.add_chat_template(template)
    if model is not None:
        for name, w in (gguf_tensors(model) | (extra or {})).items():
            if name.split(".")[-2] in QUANTIZED:
                q = gguf.GGMLQuantizationType.Q8_0
                writer.add_tensor(name, gguf.quants.quantize(w, q), raw_dtype=q)
            else:
                writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
    finish(writer)
    return path


def finish(writer) -> None:
    """Header, metadata and tensors out, file closed."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def written(request, tmp_path_factory):
    model = reference_model(len(vocabulary()), tied=request.param)
    folder = tmp_path_factory.mktemp("gguf")
    return model, write(folder / "tiny.gguf", model)


def test_dequantized_weights(written):
    """F32 tensors come back as they were written, Q8_0 ones as gguf dequantizes them; q and k in
    transformers' row order either way."""
    gguf = require("gguf")
    model, path = written
    ours = lmatlas.load(path)
    stored = {t.name: t for t in gguf.GGUFReader(path).tensors}
    layer, state = ours.backbone.layers[1], model.state_dict()
    stored_q = stored["blk.1.attn_q.weight"]
    q = gguf.quants.dequantize(stored_q.data, stored_q.tensor_type)  # (HIDDEN, HIDDEN), rows permuted
    half = HIDDEN // HEADS // 2
    q = torch.from_numpy(q.reshape(HEADS, half, 2, HIDDEN).swapaxes(1, 2).reshape(HIDDEN, HIDDEN))
    k = state["model.layers.1.self_attn.k_proj.weight"]
    qkv = layer.attn.qkv.weight.detach()
    assert torch.equal(qkv[:HIDDEN], q)
    assert torch.equal(qkv[HIDDEN : HIDDEN + k.shape[0]], k)  # F32: exact
    assert (qkv[:HIDDEN] - state["model.layers.1.self_attn.q_proj.weight"]).abs().max() < 0.01  # Q8_0 error
    assert torch.equal(layer.mlp_norm.weight, state["model.layers.1.post_attention_layernorm.weight"])
    assert ours.config.tie_word_embeddings == model.config.tie_word_embeddings


def test_logits_against_transformers(written):
    model, path = written
    ref = transformers().AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    ours = lmatlas.load(path.parent)  # the folder holding it
    ids = torch.randint(3, len(vocabulary()), (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = mask[2, 4:] = 0
    with torch.no_grad():
        got, expected = ours(ids, attention_mask=mask).logits, ref(input_ids=ids, attention_mask=mask).logits
    diff = (got - expected)[mask.bool()].abs().max().item()
    print(f"max abs logit diff: {diff:.2e}")
    assert diff <= TOL
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=2)
    one = torch.ones_like(ids[:1])
    assert torch.equal(ours.generate(ids[:1], one, **kw), ref.generate(input_ids=ids[:1], attention_mask=one, **kw))


def test_bfloat16(written):
    ours = lmatlas.load(written[1], dtype="bfloat16")
    assert ours.backbone.layers[0].attn.qkv.weight.dtype == torch.bfloat16


def test_tokenizer(written, tmp_path):
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    path = write(tmp_path / "chat.gguf", reference_model(len(vocabulary()), tied=True), template=template)
    assert lmatlas.load_tokenizer(path).chat_template == template  # the file itself, or its folder
    tokenizer = lmatlas.load_tokenizer(tmp_path)
    ref = transformers().AutoTokenizer.from_pretrained(tmp_path, gguf_file="chat.gguf")
    texts = ["the thin cat in the hat", "  a\ttab, 12 digits and ü", "<|im_start|>the<|im_end|>"]
    got = tokenizer(texts)["input_ids"]
    assert got == ref(texts)["input_ids"]  # add_bos_token is set: <|im_start|> first, as transformers
    assert all(ids[0] == 1 for ids in got)
    assert [tokenizer.decode(ids, skip_special_tokens=True) for ids in got][:2] == texts[:2]
    from lmatlas.chat import apply_chat_template

    assert apply_chat_template(tokenizer, [{"role": "user", "content": "hi"}]) == "<|im_start|>user\nhi<|im_end|>\n"


# -- bad files ------------------------------------------------------------------------------------


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("not a model at all")
    with pytest.raises(LmatlasError, match=r"model\.gguf: not a GGUF file"):
        lmatlas.load(path)


def test_truncated_file(written, tmp_path):
    data = written[1].read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(LmatlasError, match=r"cut\.gguf: not a readable GGUF file, truncated or corrupt"):
        lmatlas.load(path)
    path.write_bytes(data[:100])  # cut inside the metadata
    with pytest.raises(LmatlasError, match=r"cut\.gguf: not a readable GGUF file, truncated or corrupt"):
        lmatlas.load_tokenizer(path)


def test_unsupported_architecture(tmp_path):
    path = write(tmp_path / "other.gguf", architecture="mamba", tokenizer=False)
    sentence = r"other\.gguf: architecture 'mamba' is not one lmatlas reads from GGUF; it reads llama, qwen2, gpt2, bloom, falcon"
    with pytest.raises(LmatlasError, match=sentence):
        lmatlas.load(path)


def test_tensor_outside_the_layout(written, tmp_path):
    path = write(tmp_path / "bias.gguf", written[0], extra={"blk.0.attn_q.bias": np.zeros(HIDDEN, dtype=np.float32)})
    with pytest.raises(LmatlasError, match=r"bias\.gguf: tensor blk\.0\.attn_q\.bias is not part of the llama layout"):
        lmatlas.load(path)


def test_missing_tokenizer_metadata(tmp_path):
    path = write(tmp_path / "bare.gguf", reference_model(len(vocabulary()), tied=True), tokenizer=False)
    lmatlas.load(path)  # the model needs no tokenizer
    sentence = r"bare\.gguf: its metadata has no tokenizer\.ggml\.model, which a tokenizer needs"
    with pytest.raises(LmatlasError, match=sentence):
        lmatlas.load_tokenizer(path)


def test_unknown_pre_tokenizer(tmp_path):
    path = write(tmp_path / "split.gguf", pre="no-such-split")
    with pytest.raises(LmatlasError, match=r"split\.gguf: tokenizer\.ggml\.pre is 'no-such-split'; lmatlas knows default"):
        lmatlas.load_tokenizer(path)


def test_several_files_in_a_folder(written, tmp_path):
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(written[1].read_bytes())
    with pytest.raises(LmatlasError, match="holds several GGUF files"):
        lmatlas.load(tmp_path)


def test_gguf_file_names_the_one_to_load(written, tmp_path, monkeypatch):
    """As transformers' ``from_pretrained(folder, gguf_file=...)``: the file of a folder holding
    several, or of a hub repository (offline here: one sentence, nothing fetched)."""
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(written[1].read_bytes())
    ids = torch.tensor([[5, 9, 14, 3]])
    want = lmatlas.load(written[1])(ids).logits
    assert torch.equal(lmatlas.load(tmp_path, gguf_file="b.gguf")(ids).logits, want)
    assert lmatlas.load_tokenizer(tmp_path, gguf_file="a.gguf")("the cat")["input_ids"] == \
        lmatlas.load_tokenizer(written[1])("the cat")["input_ids"]
    with pytest.raises(LmatlasError, match="no file c.gguf in this folder"):
        lmatlas.load(tmp_path, gguf_file="c.gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LmatlasError, match="not in the Hugging Face cache while offline"):
        lmatlas.load("lmatlas-test/no-such-repo-GGUF", gguf_file="model.Q4_0.gguf")


def test_one_parse_for_model_and_tokenizer(written, monkeypatch):
    """load and load_tokenizer of one file share its parsed metadata; a changed file is read anew."""
    import os

    from lmatlas.gguf import reader

    parsed = []
    real = reader.GGUFFile.__init__

    def counting(self, path):
        parsed.append(path)
        real(self, path)

    monkeypatch.setattr(reader.GGUFFile, "__init__", counting)
    reader._opened.cache_clear()
    path = written[1]
    lmatlas.load_tokenizer(path)
    lmatlas.load(path)
    assert len(parsed) == 1
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    lmatlas.load_tokenizer(path)
    assert len(parsed) == 2
