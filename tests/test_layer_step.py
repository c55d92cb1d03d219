"""A pre-norm decoder layer's decoding step in one C call (lmatlas.runtime.layer_step): the same
numbers as the layer's modules (within the parity tolerance), greedy tokens identical to
transformers', every variant the C code follows, and every case where it must decline.

The tests' models are small, so their float32 products would stay with F.linear (weights that
sit in cache); each test here lowers that threshold and forces the one-row kernel, which is what
the C step requires of a float32 product."""

from __future__ import annotations

import pytest
import torch

import lmatlas
from lmatlas import runtime
from lmatlas.blocks import Layer
from lmatlas.runtime import calibrate, layer_step, linear, native, quant_kernels

from .test_parity_decoders import VOCAB, build_reference

TOL = 1e-4


def _gemv_paths() -> list[str]:
    """The one-row kernel's paths this CPU runs (each forced in turn, ``LMATLAS_GEMV_PATH``)."""
    lib = native.library()
    return [p for p in native.GEMV_PATHS if lib is not None and lib.gemv_paths(0) >> native.GEMV_PATHS[p] & 1]


@pytest.fixture
def kernels(monkeypatch):
    """Every float32 product of the tests' small models on the one-row kernel."""
    monkeypatch.setattr(linear, "MIN_COMPILED_ELEMENTS", 0)
    monkeypatch.setenv(calibrate.ENV, "linear-row=gemv")


def _save(tmp_path, variant: str, **config):
    ref = build_reference(variant, **config)
    folder = tmp_path / variant
    ref.save_pretrained(folder)
    return ref, folder


def _layers(model):
    return [m for m in model.modules() if isinstance(m, Layer)]


def _plans(model) -> list:
    return [m.__dict__.get("_step_plan") for m in _layers(model)]


def _steps(model, prompt: torch.Tensor, tokens: list[int], fused: bool) -> torch.Tensor:
    """Logits of a prompt then one token at a time, through the C step or the modules."""
    with torch.inference_mode(), runtime.decoding(model, 1):
        if not fused:
            for layer in _layers(model):
                layer.step = None
        cache = model.new_cache(1, 40)
        out = [model(prompt, cache=cache)["logits"][0, -1]]
        for t in tokens:
            out.append(model(torch.tensor([[t]]), cache=cache)["logits"][0, -1])
        for layer in _layers(model):
            layer.__dict__.pop("step", None)
    return torch.stack(out)


# name -> (a variant of test_parity_decoders, config fields changed)
VARIANTS = {
    "gpt2": ("gpt2", {}),  # LayerNorm, GELU (tanh), biases, learned positions
    "gpt2-relu": ("gpt2", dict(activation_function="relu")),
    "gpt2-gelu-erf": ("gpt2", dict(activation_function="gelu")),
    "gpt2-silu": ("gpt2", dict(activation_function="silu")),
    "llama-gqa": ("llama-gqa", {}),  # RMSNorm, rotary, grouped-query, SwiGLU
    # head_dim apart from hidden / heads, q/k/v and MLP biases, one key/value head
    "llama-head-dim-bias": ("llama-head-dim-tied-bias-llama3-rope", {}),
    "qwen2-multi-query": ("qwen2-head-dim-tied-multi-query-linear-rope", {}),
}


def _variant(name: str) -> tuple[str, dict]:
    return VARIANTS[name]


@pytest.mark.parametrize("path", _gemv_paths())
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_c_step_equals_the_modules(name, path, kernels, tmp_path, monkeypatch):
    monkeypatch.setenv("LMATLAS_GEMV_PATH", path)
    base, config = _variant(name)
    _, folder = _save(tmp_path, base, **config)
    model = lmatlas.load(folder)
    gen = torch.Generator().manual_seed(3)
    prompt = torch.randint(3, VOCAB, (1, 7), generator=gen)
    tokens = torch.randint(3, VOCAB, (9,), generator=gen).tolist()
    fused = _steps(model, prompt, tokens, fused=True)
    assert all(isinstance(p, layer_step._Bound) for p in _plans(model)), "every layer took the C step"
    plain = _steps(model, prompt, tokens, fused=False)
    assert (fused - plain).abs().max().item() <= TOL


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa", "llama-head-dim-bias"])
def test_the_bfloat16_step_equals_the_modules_within_their_rounding(name, kernels, tmp_path):
    """A bfloat16 model: the C step rounds to bfloat16 where the modules hold a bfloat16 tensor
    (SDPA's rounding of the attention weights included), and computes in float32 between, as they
    do. Here the logits come out equal; elsewhere a sum taken in another order (SDPA's exp is a
    vectorised approximation) can move a value across a rounding boundary, one bfloat16 step
    (2^-8 of it), so the test allows 2^-7 of the logits' scale."""
    base, config = _variant(name)
    _, folder = _save(tmp_path, base, **config)
    model = lmatlas.load(folder, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(3)
    prompt = torch.randint(3, VOCAB, (1, 7), generator=gen)
    tokens = torch.randint(3, VOCAB, (6,), generator=gen).tolist()
    fused = _steps(model, prompt, tokens, fused=True).float()
    assert all(isinstance(p, layer_step._Bound) for p in _plans(model))
    plain = _steps(model, prompt, tokens, fused=False).float()
    assert (fused - plain).abs().max().item() <= 2**-7 * plain.abs().max().item()


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa", "qwen2-multi-query"])
def test_greedy_tokens_through_the_c_step_equal_transformers(name, kernels, tmp_path):
    base, config = _variant(name)
    ref, folder = _save(tmp_path, base, **config)
    model = lmatlas.load(folder)
    prompt = torch.randint(3, VOCAB, (1, 6), generator=torch.Generator().manual_seed(5))
    want = ref.generate(prompt, max_new_tokens=14, min_new_tokens=14, do_sample=False, num_beams=1)
    got = model.generate(prompt, max_new_tokens=14, min_new_tokens=14)
    assert all(isinstance(p, layer_step._Bound) for p in _plans(model))
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("path", quant_kernels.quant_paths())
def test_quantized_layers_take_the_c_step_within_the_activations_rounding(path, kernels, tmp_path, monkeypatch):
    """A Q8_0 model (products through the integer kernels, the gated pair in one pass): one step
    against the modules' within what rounding the activations to int8 allows (a norm computed in
    another order can move an activation across a rounding boundary). On each path of the
    integer kernels this CPU runs."""
    monkeypatch.setenv("LMATLAS_QUANT_PATH", path)
    _, folder = _save(tmp_path, "llama-gqa", hidden_size=64, intermediate_size=96, head_dim=16)
    model = lmatlas.load(folder, quantize="q8_0")
    prompt = torch.randint(3, VOCAB, (1, 7), generator=torch.Generator().manual_seed(4))
    fused = _steps(model, prompt, [11], fused=True)
    plans = _plans(model)
    assert all(isinstance(p, layer_step._Bound) and p.plan.gated_kernel for p in plans)
    plain = _steps(model, prompt, [11], fused=False)
    assert (fused - plain).abs().max().item() <= 0.02 * plain.abs().max().item()


def test_a_changed_weight_is_seen_at_the_next_step(kernels, tmp_path):
    """The plan points into the layer's tensors: changed in place, the next step reads the new
    values; replaced (new storage), the plan is made again."""
    _, folder = _save(tmp_path, "llama-gqa")
    model = lmatlas.load(folder)
    prompt = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(6))
    _steps(model, prompt, [9], fused=True)
    layer = _layers(model)[1]
    with torch.no_grad():
        layer.mlp.fc_out.weight.mul_(1.5)
    layer.attn.qkv.weight = torch.nn.Parameter(layer.attn.qkv.weight.detach() * 0.5)
    fused = _steps(model, prompt, [9, 10], fused=True)
    plain = _steps(model, prompt, [9, 10], fused=False)
    assert (fused - plain).abs().max().item() <= TOL
    # Within one installation (no new plan at a decode's start): a replaced weight is noticed.
    runtime.install(model)
    with torch.inference_mode():
        cache = model.new_cache(1, 8)
        model(prompt, cache=cache)
        x, rope = torch.randn(1, 1, 48), (torch.ones(1, 1, 1, 12), torch.zeros(1, 1, 1, 12))
        assert layer_step.step(layer, x, rope, cache.layer(1)) is not None
        first = layer.__dict__["_step_plan"]
        layer.mlp.fc_out.weight = torch.nn.Parameter(layer.mlp.fc_out.weight.detach() * -1)
        got = layer_step.step(layer, x, rope, cache.layer(1))
        assert layer.__dict__["_step_plan"] is not first
        step = layer.step
        layer.step = None
        want = layer(x, None, rope, cache.layer(1))
        layer.step = step
        assert (got - want).abs().max().item() <= TOL
    runtime.uninstall(model)


def test_a_replaced_module_a_changed_setting_a_hook_or_training_are_seen(kernels, tmp_path):
    """Within one installation, each change a user can make to a layer after its plan was made:
    a linear layer replaced, a setting changed, a forward hook added (the C step would skip it),
    a submodule put in training mode (attention dropout)."""
    _, folder = _save(tmp_path, "llama-gqa")
    model = lmatlas.load(folder)
    layer = _layers(model)[1]
    runtime.install(model)
    x, rope = torch.randn(1, 1, 48), (torch.ones(1, 1, 1, 12), torch.zeros(1, 1, 1, 12))

    def both(cache):
        got = layer_step.step(layer, x, rope, cache.layer(1))
        step = layer.step
        layer.step = None
        want = layer(x, None, rope, cache.layer(1))
        layer.step = step
        return got, want

    with torch.inference_mode():
        cache = model.new_cache(1, 8)
        model(torch.tensor([[5, 6, 7]]), cache=cache)
        got, want = both(cache)
        assert (got - want).abs().max().item() <= TOL
        first = layer.__dict__["_step_plan"]
        new = torch.nn.Linear(70, 48, bias=False).eval()
        torch.nn.init.normal_(new.weight)
        layer.mlp.fc_out = new
        runtime.install(layer.mlp)  # a CpuLinear, as a decode makes it
        layer.__dict__["_step_plan"] = first  # the plan of the old module, as within a decode
        got, want = both(cache)
        assert layer.__dict__["_step_plan"] is not first and (got - want).abs().max().item() <= TOL
        layer.attn.scale = 0.01
        got, want = both(cache)
        assert (got - want).abs().max().item() <= TOL
        handle = layer.mlp.register_forward_hook(lambda module, args, out: out * 0)
        assert layer_step.step(layer, x, rope, cache.layer(1)) is None
        handle.remove()
        layer_step.forget(layer)
        assert layer_step.step(layer, x, rope, cache.layer(1)) is not None
        layer.attn.train()
        assert layer_step.step(layer, x, rope, cache.layer(1)) is None
    runtime.uninstall(model)


def test_a_model_that_decoded_still_copies_and_pickles(kernels, tmp_path):
    import copy
    import io
    import pickle

    _, folder = _save(tmp_path, "llama-gqa")
    model = lmatlas.load(folder)
    prompt = torch.tensor([[5, 6, 7]])
    want = model.generate(prompt, max_new_tokens=4, min_new_tokens=4)
    assert all(isinstance(p, layer_step._Bound) for p in _plans(model))
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert all(p is None for p in _plans(twin))  # a plan points into the original's memory
        assert twin.generate(prompt, max_new_tokens=4, min_new_tokens=4).tolist() == want.tolist()
    torch.save(model, io.BytesIO())


@pytest.mark.parametrize("variant", ["falcon-40b-new-architecture", "opt-350m-post-norm-projected"])
def test_other_layouts_keep_their_modules(variant, kernels, tmp_path):
    """The parallel layout (Falcon) and post-norm layers (OPT-350m) are not what the C step
    follows: no plan, and the modules' numbers."""
    _, folder = _save(tmp_path, variant)
    model = lmatlas.load(folder)
    prompt = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(7))
    _steps(model, prompt, [9], fused=True)
    assert all(p is False for p in _plans(model))


def test_it_declines_what_it_does_not_follow(kernels, tmp_path, monkeypatch):
    _, folder = _save(tmp_path, "llama-gqa")
    model = lmatlas.load(folder)
    layer = _layers(model)[0]
    runtime.install(model)
    with torch.inference_mode():
        cache = model.new_cache(1, 8)
        model(torch.tensor([[5, 6, 7]]), cache=cache)
        view = cache.layer(0)
        x = torch.randn(1, 1, 48)
        rope = (torch.ones(1, 1, 1, 12), torch.zeros(1, 1, 1, 12))
        assert layer_step.step(layer, x, rope, view) is not None
        assert layer_step.step(layer, x.bfloat16(), rope, view) is None  # another dtype
        assert layer_step.step(layer, torch.randn(1, 2, 48), rope, view) is None  # two tokens
        assert layer_step.step(layer, torch.randn(2, 1, 48), rope, view) is None  # two rows
        assert layer_step.step(layer, torch.randn(1, 1, 96)[..., ::2], rope, view) is None  # strided
        assert layer_step.step(layer, x, (rope[0].double(), rope[1].double()), view) is None
        full = cache.layer(0)
        full.start = cache.max_length  # no room for the token
        assert layer_step.step(layer, x, rope, full) is None
    with torch.enable_grad():
        assert layer_step.step(layer, x, rope, view) is None  # gradients on
    # A float32 product whose kernel is not the one-row C kernel: the layer keeps its modules.
    monkeypatch.setenv(calibrate.ENV, "linear-row=aten")
    runtime.install(model)
    for m in model.modules():
        if isinstance(m, linear.CpuLinear):
            m._kernels = None
    with torch.inference_mode():
        assert layer_step.step(layer, x, rope, view) is None
    assert layer.__dict__["_step_plan"] is False
    runtime.uninstall(model)
    assert "_step_plan" not in layer.__dict__


def test_a_padded_batch_and_a_float16_model_take_the_modules(kernels, tmp_path):
    ref, folder = _save(tmp_path, "llama-gqa")
    model = lmatlas.load(folder)
    ids = torch.tensor([[0, 0, 5, 6, 7], [4, 5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    got = model.generate(ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5)
    want = ref.generate(ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    assert got.tolist() == want.tolist()
    assert all(p in (None, False) for p in _plans(model))
    half = lmatlas.load(folder, dtype=torch.float16)
    half.generate(ids[1:], max_new_tokens=3, min_new_tokens=3)
    assert all(p is None for p in _plans(half))  # declined before planning: no float16 step
