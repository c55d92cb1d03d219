"""The CPU runtime (lmatlas.runtime) is installed for a decode only, under any autograd mode, with
one switch and one thread count.

- ``lmatlas.load`` gives plain PyTorch; generation installs the kernels, which then stay with
  the model until ``runtime.uninstall``;
- an encoder's forward pass (embeddings, a search query) neither builds nor calls the C library;
- decoding works inside ``torch.inference_mode()`` (weights made there have no version counter);
- ``LMATLAS_KERNELS=0`` keeps every kernel off: no linear swap, no attention or norm hook, no build;
- the C kernels run on the thread count the runtime chose.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lmatlas
from lmatlas import runtime
from lmatlas.attention import CrossAttention, SelfAttention
from lmatlas.blocks import Layer
from lmatlas.runtime import linear, native

from .reference import default_model_path, transformers
from .test_generate import assert_same, hf_generate
from .test_parity_decoders import _saved, left_padded_batch
from .test_parity_seq2seq import padded_sources, saved_seq2seq  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runtime"))
    return lambda variant: _saved(variant, "causal-lm", True, root)


@pytest.fixture
def no_build(monkeypatch):
    """Any attempt to build or call the C library fails the test."""
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_failed", None)

    def refuse(*args, **kwargs):
        raise AssertionError("the C library was built or called")

    monkeypatch.setattr(native, "_build", refuse)
    for name in ("few_queries_attention", "decode_step_attention", "linear_rows", "add_layer_norm"):
        monkeypatch.setattr(native, name, refuse)
    # The hooks hold the kernels they were installed with: point them at the refusal too.
    monkeypatch.setattr(runtime, "_SELF_ATTENTION_HOOKS", {"decode_step": refuse})
    monkeypatch.setattr(runtime, "_CROSS_ATTENTION_HOOKS", {"attend_few": refuse})
    monkeypatch.setattr(runtime, "_LAYER_HOOKS", {"add_norm": refuse})


def _hooked(model: nn.Module) -> bool:
    return any(
        isinstance(m, runtime.CpuLinear)
        or (isinstance(m, (SelfAttention, CrossAttention, Layer)) and {"decode_step", "attend_few", "add_norm"} & set(vars(m)))
        for m in model.modules()
    )


def test_load_gives_plain_pytorch_and_generation_installs(folders):
    ref, folder = folders("gpt2")
    model = lmatlas.load(folder)
    assert not _hooked(model)
    ids, mask = left_padded_batch()
    model.generate(ids, mask, max_new_tokens=3)
    assert _hooked(model)
    runtime.uninstall(model)
    assert not _hooked(model)
    assert_same(model.generate(ids, mask, max_new_tokens=4), hf_generate(ref, ids, mask, max_new_tokens=4), "gpt2")


@pytest.mark.parametrize("variant", ["gpt2", "llama-gqa"])
def test_generate_inside_inference_mode(variant, folders, monkeypatch):
    """A model loaded and decoded inside inference_mode: its weights are inference tensors, which
    have no version counter for the kernels' weight copies to check."""
    monkeypatch.setattr(linear, "MIN_COMPILED_ELEMENTS", 0)  # every linear takes a kernel
    ref, folder = folders(variant)
    ids, mask = left_padded_batch()
    with torch.inference_mode():
        model = lmatlas.load(folder)
        assert model.backbone.layers[0].attn.out.weight.is_inference()
        one = model.generate(ids[:1], mask[:1], max_new_tokens=5)  # one row
        rows = model.generate(ids, mask, max_new_tokens=5)  # several rows: the blocked copies
        beams = model.generate(ids[:1], mask[:1], max_new_tokens=5, num_beams=2)
    assert_same(one, hf_generate(ref, ids[:1], mask[:1], max_new_tokens=5), f"{variant} one row")
    assert_same(rows, hf_generate(ref, ids, mask, max_new_tokens=5), f"{variant} several rows")
    assert_same(beams, hf_generate(ref, ids[:1], mask[:1], max_new_tokens=5, num_beams=2), f"{variant} beams")


def test_generate_under_no_grad_and_with_autograd(folders):
    ref, folder = folders("gpt2")
    ids, mask = left_padded_batch()
    want = hf_generate(ref, ids, mask, max_new_tokens=4)
    model = lmatlas.load(folder)
    with torch.no_grad():
        assert_same(model.generate(ids, mask, max_new_tokens=4), want, "no_grad")
    assert_same(model.generate(ids, mask, max_new_tokens=4), want, "grad enabled")
    # Training after a decode never takes a kernel: gradients flow as in plain PyTorch.
    model.train()
    loss = model(ids, attention_mask=mask).logits.sum()
    loss.backward()
    assert all(p.grad is not None for p in model.backbone.layers[0].parameters())


def test_an_encoder_neither_builds_nor_calls_the_c_library(no_build):
    """The default embedding model (BERT-like, post-norm) on a short query: few rows, no grad,
    exactly the shape a decoding step's kernels take, but no decode."""
    vectors = lmatlas.embed(["how do I fine-tune?", "a second short question"])
    assert vectors.shape == (2, 384)
    model = lmatlas.load(default_model_path())
    tok = lmatlas.load_tokenizer(default_model_path())
    with torch.no_grad():
        model(**tok(["how do I fine-tune?"], return_tensors="pt"))
    assert not _hooked(model)


def test_loading_imports_no_compiler(tmp_path):
    """Loading builds the skeleton on the meta device without initialising it: PyTorch's random
    initialisation of a meta tensor would import TorchDynamo and Inductor (most of a small
    model's load time, and memory). Checked in a fresh interpreter, which has imported neither:
    the default model loaded, and the skeletons of the families that draw parameters in their
    constructors (XLNet, Transformer-XL's adaptive embeddings, ViT) built as ``load`` builds them."""
    import subprocess
    import sys

    t = transformers()
    configs = {
        "xlnet": t.XLNetConfig(vocab_size=50, d_model=16, n_layer=1, n_head=2, d_inner=32,
                               architectures=["XLNetLMHeadModel"]),
        "transfo-xl": t.TransfoXLConfig(vocab_size=300, d_model=16, d_embed=16, n_head=2, d_head=8, d_inner=32,
                                        n_layer=1, cutoffs=[100, 200], architectures=["TransfoXLLMHeadModel"]),
        "vit": t.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                           image_size=8, patch_size=4, architectures=["ViTModel"]),
    }
    for name, config in configs.items():
        config.save_pretrained(tmp_path / name)
    code = """
import sys, torch, lmatlas
from pathlib import Path
from lmatlas.checkpoint import read_config
from lmatlas.model import LmatlasModel
from lmatlas.presets import head_from_architectures, preset_for
lmatlas.load(sys.argv[1])
for folder in sys.argv[2:]:
    hf = read_config(Path(folder))
    preset = preset_for(hf["model_type"], folder)
    head = head_from_architectures(preset, hf["architectures"], folder)
    with torch.device("meta"):
        LmatlasModel(preset.config(hf, head), head)
print([n for n in ("torch._dynamo", "torch._inductor") if n in sys.modules])
"""
    folders = [str(tmp_path / name) for name in configs]
    p = subprocess.run([sys.executable, "-c", code, str(default_model_path()), *folders], capture_output=True, text=True,
                       check=True)
    assert p.stdout.strip() == "[]"


def test_a_model_built_for_training_is_initialised():
    """Off the meta device the skeleton is initialised as before (normal(0, 0.02), unit norms)."""
    from lmatlas.config import ModelConfig
    from lmatlas.model import LmatlasModel

    cfg = ModelConfig(model_type="bert", vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      max_positions=20, type_vocab_size=2)
    model = LmatlasModel(cfg, "masked-lm")
    for table in (model.backbone.embeddings.tokens, model.backbone.embeddings.positions, model.backbone.layers[0].attn.qkv):
        assert 0.01 < table.weight.std().item() < 0.03
    assert torch.equal(model.backbone.layers[0].attn_norm.weight, torch.ones(16))


def test_switched_off_no_kernel_at_all(folders, saved_seq2seq, monkeypatch, no_build):
    monkeypatch.setenv("LMATLAS_KERNELS", "0")
    assert not runtime.enabled()
    ref, folder = folders("gpt2")
    model = lmatlas.load(folder)
    ids, mask = left_padded_batch()
    for kw in (dict(max_new_tokens=4), dict(max_new_tokens=4, num_beams=2)):
        assert_same(model.generate(ids, mask, **kw), hf_generate(ref, ids, mask, **kw), f"gpt2 {kw}")
    assert not _hooked(model)
    ref, seq2seq = saved_seq2seq("bart")
    runtime.uninstall(seq2seq)  # a fixture model another test may have decoded with
    src, src_mask = padded_sources("bart")
    kw = dict(max_new_tokens=5, num_beams=3)
    assert_same(seq2seq.generate(src, src_mask, **kw), hf_generate(ref, src, src_mask, **kw), "bart")
    assert not _hooked(seq2seq)
    assert native.library() is None


@pytest.mark.parametrize("threads", [1, 2])
def test_the_c_kernels_run_on_the_runtime_s_thread_count(threads, folders, monkeypatch):
    """A decode's steps run on the count the runtime's thread policy chose (here fixed by
    LMATLAS_DECODE_THREADS), in the C kernels as in PyTorch's operators."""
    monkeypatch.setattr(linear, "MIN_COMPILED_ELEMENTS", 0)
    monkeypatch.setenv("LMATLAS_DECODE_THREADS", str(threads))
    monkeypatch.setenv("LMATLAS_KERNEL_CHOICE", "linear-rows=blocked")
    assert native.library() is not None, native._failed
    _, folder = folders("gpt2")
    model = lmatlas.load(folder)
    ids, mask = left_padded_batch()
    seen = []
    real = native.linear_rows

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append((torch.get_num_threads(), native.threads_used()))
        return out

    monkeypatch.setattr(linear.native, "linear_rows", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model.generate(ids, mask, max_new_tokens=4)  # three rows: the blocked linear kernel
    finally:
        torch.set_num_threads(before)
    # Every call ran on torch's count at the time; the steps after the first token (the prompt's
    # pass runs on the caller's setting) on the count the policy chose.
    assert len(seen) > 3 and all(ours == team for ours, team in seen), seen
    assert all(team == threads for _, team in seen[1:]), seen


def test_each_kernel_takes_the_thread_count_it_is_given():
    assert native.library() is not None, native._failed
    before = torch.get_num_threads()
    x, w = torch.randn(3, 64), torch.randn(40, 64)
    q, k = torch.randn(2, 4, 1, 8), torch.randn(2, 4, 6, 8)
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            native.linear_rows(x, native.block_weight(w), None, 40)
            assert native.threads_used() == n
            native.decode_step_attention(q, k, k.clone(), 6, None, 0.5)
            assert native.threads_used() == n
    finally:
        torch.set_num_threads(before)
