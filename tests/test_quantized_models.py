"""Models whose matrices stay quantized (lmatlas.quantization): a GGUF file's Q8_0, Q4_0 and Q4_1
blocks kept as stored, ``lmatlas.load(..., quantize=...)`` on a float checkpoint (the bytes of
``lmatlas convert --dtype q8_0`` and of the ``gguf`` package), the real SmolLM2 file decoded
through the kernels, and what is refused.

Tolerances: without the runtime a quantized model computes with its dequantized weights, so its
logits are the dequantized float model's (to 1e-5: the head is multiplied a tile of rows at a
time). With the runtime installed, every linear layer's input is rounded to int8 blocks (a
relative error up to 1/254 of each block's largest value); through these tiny two-layer models
the logits move by at most 2% of their largest magnitude (RUNTIME_TOL).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import lmatlas
from lmatlas import LmatlasError, runtime
from lmatlas.cli import main
from lmatlas.gguf.config import unpermute_rotary
from lmatlas.runtime import quant_formats
from lmatlas.runtime.quantized import QuantizedLinear

from .reference import require, transformers
from .test_gguf_quant import FFN, HEADS, HIDDEN, KV_HEADS, VOCAB, reference  # noqa: F401  (the fixture)
from .test_gguf_quant import write as write_typed
from .test_gguf_written import reference_model, vocabulary
from .test_gguf_written import write as write_llama

RUNTIME_TOL = 0.02
KINDS = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")  # K-quants: random blocks (test_gguf_quant)


def quantized(model) -> dict[str, QuantizedLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantizedLinear)}


def batch(vocab: int):
    ids = torch.randint(3, vocab, (2, 9), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask


def logits(model, ids, mask):
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits[mask.bool()]


@pytest.mark.parametrize("kind", KINDS)
def test_gguf_matrices_stay_in_their_blocks(reference, kind, tmp_path):  # noqa: F811
    gguf = require("gguf")
    path = write_typed(tmp_path / f"{kind}.gguf", reference, kind)
    stored = {t.name: torch.from_numpy(np.array(t.data)) for t in gguf.GGUFReader(path).tensors}
    ours, plain = lmatlas.load(path), lmatlas.load(path, dequantize=True)
    assert not quantized(plain)
    layers = quantized(ours)
    assert sorted(layers) == sorted(f"backbone.layers.0.{n}" for n in ("attn.qkv", "attn.out", "mlp.gate",
                                                                       "mlp.fc_in", "mlp.fc_out")) + ["head.decoder"]
    assert {m.kind.name for m in layers.values()} == {kind.lower()}
    # The file's bytes: q and k rows in lmatlas' order (llama.cpp's interleaving undone), q, k, v fused.
    meta = {"h": HEADS, "kv": KV_HEADS}
    q = unpermute_rotary("h")(stored["blk.0.attn_q.weight"], meta)
    k = unpermute_rotary("kv")(stored["blk.0.attn_k.weight"], meta)
    assert torch.equal(layers["backbone.layers.0.attn.qkv"].blocks, torch.cat([q, k, stored["blk.0.attn_v.weight"]]))
    for ours_name, theirs in (("mlp.fc_out", "ffn_down"), ("mlp.gate", "ffn_gate"), ("attn.out", "attn_output")):
        assert torch.equal(layers[f"backbone.layers.0.{ours_name}"].blocks, stored[f"blk.0.{theirs}.weight"])
    assert torch.equal(layers["head.decoder"].blocks, stored["output.weight"])
    # Plain PyTorch: the dequantized model's numbers; the embeddings (not a matrix multiplied) are float.
    assert torch.equal(ours.backbone.embeddings.tokens.weight, plain.backbone.embeddings.tokens.weight)
    ids, mask = batch(VOCAB)
    want = logits(plain, ids, mask)
    assert (logits(ours, ids, mask) - want).abs().max().item() <= 1e-5
    runtime.install(ours)
    got = logits(ours, ids, mask)
    assert (got - want).abs().max().item() <= RUNTIME_TOL * want.abs().max().item()
    out = ours.generate(ids[:1], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 13)


def test_tied_head_takes_the_embeddings_blocks(tmp_path, monkeypatch):
    """SmolLM2's layout: no output matrix, the head reads the Q8_0 token embeddings; the
    embeddings themselves are looked up in float32."""
    from . import test_gguf_written

    gguf = require("gguf")
    monkeypatch.setattr(test_gguf_written, "QUANTIZED", test_gguf_written.QUANTIZED + ("token_embd",))
    path = write_llama(tmp_path / "tied.gguf", reference_model(len(vocabulary()), tied=True))
    embd = {t.name: t for t in gguf.GGUFReader(path).tensors}["token_embd.weight"]
    assert embd.tensor_type.name == "Q8_0"
    ours, plain = lmatlas.load(path), lmatlas.load(path, dequantize=True)
    assert torch.equal(ours.head.decoder.blocks, torch.from_numpy(np.array(embd.data)))
    assert torch.equal(ours.backbone.embeddings.tokens.weight, plain.backbone.embeddings.tokens.weight)
    assert plain.head.decoder.weight is plain.backbone.embeddings.tokens.weight
    ids, mask = batch(len(vocabulary()))
    assert (logits(ours, ids, mask) - logits(plain, ids, mask)).abs().max().item() <= 1e-5


def _saved_transformers(tmp_path, config, cls):
    torch.manual_seed(0)
    cls(config).save_pretrained(tmp_path / "hf")
    return lmatlas.load(tmp_path / "hf")


@pytest.mark.parametrize("arch", ["gpt2", "bloom"])
def test_row_moves_of_other_layouts(arch, tmp_path):
    """GPT-2's projections, stored transposed in GGUF and transposed back, and BLOOM's per-head
    q/k/v, regrouped: whole rows move, so their blocks are kept, and they are the blocks of
    lmatlas' own weights."""
    tf = transformers()
    if arch == "gpt2":
        config, cls = tf.GPT2Config(vocab_size=50, n_embd=64, n_layer=2, n_head=4, n_positions=32), tf.GPT2LMHeadModel
    else:
        config, cls = tf.BloomConfig(vocab_size=50, hidden_size=64, n_layer=2, n_head=4), tf.BloomForCausalLM
    model = _saved_transformers(tmp_path, config, cls)
    path = lmatlas.gguf.write_gguf(model, tmp_path / "q8.gguf", dtype="q8_0")
    ours = lmatlas.load(path)
    layers = quantized(ours)
    assert len(layers) == 1 + 4 * 2  # the head, four matrices a layer
    for name, layer in layers.items():
        assert torch.equal(layer.blocks, quant_formats.quantize(model.get_submodule(name).weight, "q8_0")), name
    ids, mask = batch(50)
    assert (logits(ours, ids, mask) - logits(lmatlas.load(path, dequantize=True), ids, mask)).abs().max() <= 1e-5


def small_llama(folder, tied: bool):
    tf = transformers()
    config = tf.LlamaConfig(vocab_size=48, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)  # fmt: skip
    torch.manual_seed(1)
    tf.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_quantize_q8_0_holds_the_bytes_of_convert(tied, tmp_path, capsys):
    folder = small_llama(tmp_path / "model", tied)
    out = tmp_path / "model.q8_0.gguf"
    assert main(["convert", str(folder), "--to", "gguf", "--dtype", "q8_0", "-o", str(out)]) == 0
    capsys.readouterr()
    ours, converted = lmatlas.load(folder, quantize="q8_0"), lmatlas.load(out)
    a, b = quantized(ours), quantized(converted)
    assert sorted(a) == sorted(b) and len(a) == 2 * 5 + 1
    for name in a:
        assert torch.equal(a[name].blocks, b[name].blocks), name


@pytest.mark.parametrize("kind", ["q8_0", "q4_0", "q4_1"])
def test_quantize_option_on_a_float_checkpoint(kind, tmp_path):
    gguf = require("gguf")
    folder = small_llama(tmp_path / "model", tied=True)
    plain, ours = lmatlas.load(folder), lmatlas.load(folder, quantize=kind)
    half = lmatlas.load(folder, quantize=kind, dtype="bfloat16")
    layers = quantized(ours)
    assert ours.num_parameters() == plain.num_parameters()
    for name, layer in layers.items():
        want = "q8_0" if name == "head.decoder" else kind  # the head in Q8_0, as llama.cpp's quantizer
        assert layer.kind.name == want
        w = plain.get_submodule(name).weight.detach().numpy()
        assert np.array_equal(layer.blocks.numpy(), gguf.quants.quantize(w, gguf.GGMLQuantizationType[want.upper()]))
        # from the stored float32 weights, whatever the dtype of the rest
        assert torch.equal(quantized(half)[name].blocks, layer.blocks)
    assert half.backbone.embeddings.tokens.weight.dtype == torch.bfloat16
    # The tied head has its own blocks; the embeddings stay as they were.
    assert torch.equal(ours.backbone.embeddings.tokens.weight, plain.backbone.embeddings.tokens.weight)
    ids, mask = batch(48)
    want = logits(plain, ids, mask)
    runtime.install(ours)
    assert (logits(ours, ids, mask) - want).abs().max().item() <= 0.1 * want.abs().max().item()


def test_saved_quantized_model_is_its_dequantized_weights(tmp_path):
    from lmatlas.save import save_model

    folder = small_llama(tmp_path / "model", tied=False)
    ours = lmatlas.load(folder, quantize="q4_0")
    save_model(ours, tmp_path / "saved")
    back = lmatlas.load(tmp_path / "saved")
    assert not quantized(back)
    for name, layer in quantized(ours).items():
        assert torch.equal(back.get_submodule(name).weight, layer.weight), name


def test_training_refuses_quantized_matrices(tmp_path):
    from lmatlas.training import TrainConfig
    from lmatlas.training.trainer import Trainer

    class Task:  # what the trainer reads of a task before its first step
        metric = "loss"
        module = lmatlas.load(small_llama(tmp_path / "model", tied=True), quantize="q8_0")

    with pytest.raises(LmatlasError, match=r"^training needs float weights, and the model's matrices are quantized "
                                           r"\(q8_0\); load it with dequantize=True, or without quantize$"):
        Trainer(Task(), TrainConfig(out=tmp_path / "run", steps=1)).fit()


def test_bad_quantize_one_sentence(tmp_path):
    folder = small_llama(tmp_path / "model", tied=True)
    with pytest.raises(LmatlasError, match=r"^quantize='int4' is not a type lmatlas quantizes to; use one of q8_0, q4_0, q4_1$"):
        lmatlas.load(folder, quantize="int4")


def test_cli_flags(tmp_path, capsys, monkeypatch):
    from lmatlas.cli import build_parser
    from lmatlas.commands.serve import config

    template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    path = write_llama(tmp_path / "tiny.gguf", reference_model(len(vocabulary()), tied=False), template=template)
    monkeypatch.setattr("sys.stdin", io.StringIO("the\n"))
    assert main(["chat", "--model", str(path), "--quantize", "q4_0", "--max-new-tokens", "2"]) == 0
    served = config(build_parser().parse_args(["serve", "--quantize", "q8_0", "--dequantize"]))
    assert (served.quantize, served.dequantize) == ("q8_0", True)
    args = ["generate", "--model", str(path), "the", "--max-new-tokens", "3"]
    for extra in ([], ["--dequantize"], ["--quantize", "q4_1"], ["--dequantize", "--quantize", "q8_0"]):
        assert main(args + extra) == 0, extra
        assert capsys.readouterr().out.strip() != ""
    assert main(args + ["--quantize", "q3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--quantize 'q3' is not a type lmatlas quantizes to; use one of q8_0, q4_0, q4_1" in err
    assert main(["run", "text-generation", "the", "--model", str(path), "--quantize", "q3"]) == 1
    assert "--quantize 'q3' is not a type lmatlas quantizes to" in capsys.readouterr().err


SMOLLM2_PROMPTS = ["What is the capital of France?", "How many legs does a spider have?",
                   "Name three primary colours.", "Why is the sky blue?"]  # fmt: skip


def test_smollm2_decodes_through_the_kernels_close_to_float32():
    """The packaged Q4_1 file as it loads by default (blocks kept, int8 activations in the
    kernels) against the same file dequantized to float32: the chat prompts' next-token logits
    within 10% of their largest magnitude (int8 rounding through 30 layers), and greedy decoding:
    the tokens before the first difference, which the run prints (a near tie between two tokens
    may go either way, and the texts part there); the first tokens agree for most prompts."""
    from lmatlas.chat import apply_chat_template
    from lmatlas.defaults import generative_model

    file = generative_model()
    tokenizer = lmatlas.load_tokenizer(file)
    ours, plain = lmatlas.load(file), lmatlas.load(file, dequantize=True)
    assert {m.kind.name for m in quantized(ours).values()} == {"q4_1", "q8_0"}  # the head: token_embd, Q8_0
    runtime.install(ours)
    first = prefix = 0
    for question in SMOLLM2_PROMPTS:
        text = apply_chat_template(tokenizer, [{"role": "user", "content": question}], add_generation_prompt=True)
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        with torch.inference_mode():
            got, want = ours(ids).logits[0, -1], plain(ids).logits[0, -1]
        assert (got - want).abs().max().item() <= 0.1 * want.abs().max().item()
        a, b = (m.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1]:] for m in (ours, plain))
        same = next((i for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())) if x != y), min(len(a), len(b)))
        first, prefix = first + (same > 0), prefix + same
        print(f"{question!r}: {same} of {len(b)} greedy tokens before the first difference")
    print(f"Q4_1 through the kernels vs float32: {prefix} tokens before the first differences, first tokens "
          f"agreeing for {first} of {len(SMOLLM2_PROMPTS)} prompts")
    assert first >= len(SMOLLM2_PROMPTS) // 2
