"""Every tensor type the ``gguf`` package dequantizes that llama.cpp's quantizers write: a small
Llama whose matrices are all stored in one type, read by lmatlas and by transformers. Types
``gguf`` can quantize are quantized from the weights; the K-quants, which it only dequantizes,
are random blocks with small fp16 scales (a valid block is any bytes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lmatlas
from lmatlas import LmatlasError

from .reference import randomize, require, transformers
from .test_gguf_written import finish, permute

TOL = 1e-4
HIDDEN, HEADS, KV_HEADS, FFN, VOCAB = 256, 4, 2, 512, 40  # rows of 256: whole K-quant blocks
QUANTIZED = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
# Where a K-quant block keeps its fp16 scales (d, then dmin where it has one), by byte offset, and
# the largest scale: the wider a type's quants and sub-block scales, the smaller, for weights of
# about 0.1 (and logits of a few units).
K_SCALES = {"Q2_K": ((80, 82), 1e-3), "Q3_K": ((108,), 1e-3), "Q4_K": ((0, 2), 1e-4), "Q5_K": ((0, 2), 5e-5),
            "Q6_K": ((208,), 5e-5)}  # fmt: skip


@pytest.fixture(scope="module")
def reference():
    tf = transformers()
    config = tf.LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=1, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, max_position_embeddings=32, rms_norm_eps=1e-5, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config).eval()
    randomize(model, seed=7, std=0.05)
    return model


def random_k_blocks(kind, shape, seed):
    """Random ``kind`` blocks for a (rows, columns) matrix, each scale a small positive fp16."""
    gguf = require("gguf")
    q = gguf.GGMLQuantizationType[kind]
    block, size = gguf.GGML_QUANT_SIZES[q]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (shape[0], shape[1] // block, size), dtype=np.uint8)
    offsets, high = K_SCALES[kind]
    for offset in offsets:
        scales = rng.uniform(high / 5, high, raw.shape[:2]).astype(np.float16)
        raw[..., offset : offset + 2] = scales[..., None].view(np.uint8).reshape(*raw.shape[:2], 2)
    return raw.reshape(shape[0], -1), q


def write(path, model, kind, kinds=None):
    """``model`` as a GGUF file, its matrices in ``kind`` (``kinds``: another for some, by name)."""
    gguf = require("gguf")
    kinds = kinds or {}
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    tensors = {"token_embd.weight": state["model.embed_tokens.weight"], "output.weight": state["lm_head.weight"],
               "output_norm.weight": state["model.norm.weight"]}  # fmt: skip
    names = dict(attn_norm="input_layernorm", attn_q="self_attn.q_proj", attn_k="self_attn.k_proj",
                 attn_v="self_attn.v_proj", attn_output="self_attn.o_proj", ffn_norm="post_attention_layernorm",
                 ffn_gate="mlp.gate_proj", ffn_up="mlp.up_proj", ffn_down="mlp.down_proj")  # fmt: skip
    for ours, theirs in names.items():
        w = state[f"model.layers.0.{theirs}.weight"]
        if ours in ("attn_q", "attn_k"):
            w = permute(w, HEADS if ours == "attn_q" else KV_HEADS)
        tensors[f"blk.0.{ours}.weight"] = w
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((writer.add_context_length, 32), (writer.add_block_count, 1),
                       (writer.add_embedding_length, HIDDEN), (writer.add_feed_forward_length, FFN),
                       (writer.add_head_count, HEADS), (writer.add_head_count_kv, KV_HEADS),
                       (writer.add_rope_dimension_count, HIDDEN // HEADS), (writer.add_vocab_size, VOCAB),
                       (writer.add_layer_norm_rms_eps, 1e-5)):  # fmt: skip
        add(value)
    for i, (name, w) in enumerate(tensors.items()):
        w = np.ascontiguousarray(w, dtype=np.float32)
        kind_here = kinds.get(name, kind)
        if w.ndim == 1:  # norms stay F32, as llama.cpp keeps them
            writer.add_tensor(name, w)
        elif kind_here in K_SCALES:
            raw, q = random_k_blocks(kind_here, w.shape, seed=i)
            writer.add_tensor(name, raw, raw_dtype=q)
        else:
            q = gguf.GGMLQuantizationType[kind_here]
            writer.add_tensor(name, gguf.quants.quantize(w, q), raw_dtype=q)
    finish(writer)
    return path


@pytest.mark.parametrize("kind", QUANTIZED + tuple(K_SCALES))
def test_quant_type_against_transformers(reference, kind, tmp_path):
    gguf = require("gguf")
    path = write(tmp_path / f"{kind}.gguf", reference, kind)
    ours = lmatlas.load(path)
    stored = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert stored["blk.0.ffn_down.weight"].tensor_type.name == kind
    down = stored["blk.0.ffn_down.weight"]
    want = torch.from_numpy(gguf.quants.dequantize(down.data, down.tensor_type).reshape(HIDDEN, FFN).copy())
    assert torch.equal(ours.backbone.layers[0].mlp.fc_out.weight, want)  # gguf's own dequantization

    ref = transformers().AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with torch.no_grad():
        got, expected = ours(ids, attention_mask=mask).logits, ref(input_ids=ids, attention_mask=mask).logits
    diff = (got - expected)[mask.bool()].abs().max().item()
    print(f"{kind}: max abs logit diff {diff:.2e} (logits up to {expected.abs().max():.1f})")
    assert diff <= TOL


@pytest.mark.parametrize("q_kind", ["Q5_0", "Q4_0"])
def test_a_fused_projection_of_mixed_types_is_kept_as_q8_0(reference, q_kind, tmp_path):
    """llama.cpp's Q4_K_M stores a layer's q and k in Q5_0 (where rows are not whole blocks of
    256) and v in Q8_0: lmatlas' fused q/k/v projection is kept as Q8_0 blocks of the very same
    weights (no rounding), and the model matches transformers on the file."""
    from lmatlas.runtime import quant_formats
    from lmatlas.runtime.quantized import QuantizedLinear

    path = write(tmp_path / f"{q_kind}.gguf", reference, q_kind, {"blk.0.attn_v.weight": "Q8_0"})
    ours, plain = lmatlas.load(path), lmatlas.load(path, dequantize=True)
    qkv = ours.backbone.layers[0].attn.qkv
    assert isinstance(qkv, QuantizedLinear) and qkv.kind is quant_formats.Q8_0
    assert torch.equal(qkv.weight, plain.backbone.layers[0].attn.qkv.weight)
    ref = transformers().AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (ours(ids).logits - ref(input_ids=ids).logits).abs().max().item() <= TOL
    # A decode takes the integer kernels for Q5_0 and the Q8_0 of the fused projection (the layer
    # step, the gated MLP in one call): its logits within the int8 activations' rounding.
    from lmatlas import runtime

    runtime.install(ours)
    cache_a, cache_b = ours.new_cache(1, 12), plain.new_cache(1, 12)
    with torch.inference_mode():
        ours(ids[:1, :6], cache=cache_a), plain(ids[:1, :6], cache=cache_b)
        got, want = ours(ids[:1, 6:], cache=cache_a).logits, plain(ids[:1, 6:], cache=cache_b).logits
    assert 0 < (got - want).abs().max().item() <= 0.02 * want.abs().max().item()


@pytest.mark.parametrize("kinds", [("Q4_K", "Q6_K"), ("Q4_1", "Q8_0")], ids=["q4_k+q6_k", "q4_1+q8_0"])
def test_a_fused_projection_of_other_mixed_types_is_kept_in_parts(reference, kinds, tmp_path):
    """q and k in one type, v in another that Q8_0 cannot hold exactly (llama.cpp's Q4_K_M gives
    some layers' v Q6_K): the fused projection is kept as runs of rows, each in its own blocks
    (``MixedQuantizedLinear``); the model matches transformers on the file; a decoding step
    through the C layer step (each part's kernel) gives the modules' own numbers; saved, the
    model holds the dequantized weight under the layer's name."""
    from lmatlas import runtime
    from lmatlas.runtime import layer_step
    from lmatlas.runtime.quantized import MixedQuantizedLinear

    qk, v = kinds
    path = write(tmp_path / f"{qk}.gguf", reference, qk, {"blk.0.attn_v.weight": v})
    ours, plain = lmatlas.load(path), lmatlas.load(path, dequantize=True)
    qkv = ours.backbone.layers[0].attn.qkv
    assert isinstance(qkv, MixedQuantizedLinear)
    assert [(p.kind.name, p.out_features) for p in qkv.parts] == [(qk.lower(), HIDDEN + HIDDEN // 2), (v.lower(), HIDDEN // 2)]
    assert torch.equal(qkv.weight, plain.backbone.layers[0].attn.qkv.weight)
    ref = transformers().AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
    ids = torch.randint(0, VOCAB, (1, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (ours(ids).logits - ref(input_ids=ids).logits).abs().max().item() <= TOL
    layer = ours.backbone.layers[0]
    for bias in (None, torch.randn(qkv.out_features, generator=torch.Generator().manual_seed(5))):
        # and with a bias (Qwen2's q/k/v): each part adds its slice of it
        qkv.bias = None if bias is None else torch.nn.Parameter(bias)
        runtime.install(ours)
        steps = []
        for hook in (True, False):
            if not hook:
                layer.__dict__["step"] = None  # the modules, each part through its kernel
            cache = ours.new_cache(1, 12)
            with torch.inference_mode():
                ours(ids[:, :6], cache=cache)
                steps.append(ours(ids[:, 6:], cache=cache).logits)
        assert isinstance(layer.__dict__.get("_step_plan"), layer_step._Bound)  # the C step took the layer
        assert (steps[0] - steps[1]).abs().max().item() <= 1e-5 * steps[1].abs().max().item()
        runtime.uninstall(ours)
    qkv.bias = None
    from lmatlas.save import save_model

    save_model(ours, tmp_path / "saved")
    again = lmatlas.load(tmp_path / "saved")
    assert torch.equal(again.backbone.layers[0].attn.qkv.weight, plain.backbone.layers[0].attn.qkv.weight)


def test_q8_0_of_the_same_weights():
    """``as_q8_0``: Q4_0 and Q5_0 blocks (and Q8_0's own) as Q8_0 blocks holding the very same
    floats; a type with a minimum is refused."""
    gguf = require("gguf")
    from lmatlas.runtime import quant_formats

    w = np.random.default_rng(0).standard_normal((7, 96)).astype(np.float32)
    for kind in (quant_formats.Q4_0, quant_formats.Q5_0, quant_formats.Q8_0):
        raw = torch.from_numpy(gguf.quants.quantize(w, gguf.GGMLQuantizationType(kind.id)))
        q8 = quant_formats.as_q8_0(raw, kind)
        assert q8.shape == (7, quant_formats.Q8_0.row_bytes(96))
        want = quant_formats.dequantize(raw, kind).view(torch.int32)
        assert torch.equal(quant_formats.dequantize(q8, quant_formats.Q8_0).view(torch.int32), want)
    with pytest.raises(ValueError, match="q4_1 blocks have a minimum"):
        quant_formats.as_q8_0(torch.zeros(1, 20, dtype=torch.uint8), quant_formats.Q4_1)


def test_type_gguf_cannot_dequantize(reference, tmp_path):
    """Q8_1 (an intermediate type of llama.cpp's matrix products, never in model files)."""
    gguf = require("gguf")
    path = tmp_path / "q81.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((writer.add_block_count, 1), (writer.add_embedding_length, HIDDEN),
                       (writer.add_head_count, HEADS), (writer.add_vocab_size, VOCAB)):  # fmt: skip
        add(value)
    q = gguf.GGMLQuantizationType.Q8_1
    writer.add_tensor("token_embd.weight", np.zeros((VOCAB, HIDDEN // 32 * 40), np.uint8), raw_dtype=q)
    finish(writer)
    with pytest.raises(LmatlasError, match=r"q81\.gguf: tensor token_embd\.weight is stored as Q8_1, which gguf cannot"):
        lmatlas.load(path)


@pytest.mark.parametrize("kind", QUANTIZED + tuple(K_SCALES))
def test_a_stored_tensor_reads_as_gguf_dequantizes_it(reference, kind, tmp_path, monkeypatch):
    """A quantized tensor read as float32 (``dequantize=True``, token tables): to the bit what
    gguf's own dequantization gives, through lmatlas' C kernels and without them (PyTorch) for
    Q8_0, Q4_0 and Q4_1, through gguf for the K-quants."""
    gguf = require("gguf")
    from lmatlas.gguf.reader import GGUFFile
    from lmatlas.runtime import native

    path = write(tmp_path / f"{kind}.gguf", reference, kind)
    down = {t.name: t for t in gguf.GGUFReader(path).tensors}["blk.0.ffn_down.weight"]
    want = torch.from_numpy(gguf.quants.dequantize(down.data, down.tensor_type).reshape(HIDDEN, FFN).copy())

    def read() -> torch.Tensor:
        file = GGUFFile(path)
        if kind in ("Q8_0", "Q4_0", "Q4_1"):  # lmatlas' own dequantization, not gguf's
            file._dequantize = None
        return file.tensor("blk.0.ffn_down.weight")

    assert torch.equal(read().view(torch.int32), want.view(torch.int32))
    # The metadata and tensors as gguf's own reader gives them, read through a plain array view.
    file, theirs = GGUFFile(path), gguf.GGUFReader(path)
    assert file.metadata == {name: field.contents() for name, field in theirs.fields.items()}
    assert all(type(t.data) is np.ndarray and np.array_equal(t.data, u.data)
               for t, u in zip(file.tensors.values(), theirs.tensors))
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_failed", "switched off for this test")
    assert torch.equal(read().view(torch.int32), want.view(torch.int32))
