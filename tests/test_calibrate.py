"""Kernels chosen by measurement on the machine (lmatlas.runtime.calibrate): the fastest candidate
is kept, stored per CPU and read back instead of timed again; a choice can be forced; and each
linear kernel, forced, computes what F.linear computes. No test here depends on how fast anything
is: timings come from a fake clock."""

from __future__ import annotations

import json

import pytest
import torch

from lmatlas import runtime
from lmatlas.errors import LmatlasError
from lmatlas.runtime import calibrate, linear, native, quant_kernels

from .test_parity_decoders import saved  # noqa: F401  (the fixture)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A choices file of the test's own, nothing read from an earlier one."""
    target = tmp_path / "choices.json"
    monkeypatch.setattr(calibrate, "path", lambda: target)
    monkeypatch.delenv(calibrate.ENV, raising=False)
    calibrate.forget()
    yield target
    calibrate.forget()


class FakeClock:
    """A clock that each candidate's call advances by that candidate's cost."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def runner(self, cost: float):
        def run(i: int) -> None:
            self.now += cost

        return run


def _candidates(clock, costs, calls=None):
    def make():
        if calls is not None:
            calls.append(1)
        return {name: clock.runner(cost) for name, cost in costs.items()}, 3

    return make


def test_the_fastest_candidate_is_chosen_and_stored(store, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(calibrate, "_clock", clock)
    names = ("aten", "onednn", "blocked")
    calls = []
    got = calibrate.choose("linear-rows", "float32/8x8/rows=4", _candidates(clock, {"aten": 3e-3, "onednn": 2e-3, "blocked": 1e-3}, calls), names)
    assert got == "blocked" and calls == [1]
    data = json.loads(store.read_text())
    (key, entry), = data["choices"].items()
    assert key == f"linear-rows/float32/8x8/rows=4/threads={torch.get_num_threads()}"
    assert entry == {"choice": "blocked", "us": {"aten": 3000.0, "blocked": 1000.0, "onednn": 2000.0}}
    # Read back, not timed again: in this process and in a new one (the file).
    assert calibrate.choose("linear-rows", "float32/8x8/rows=4", _candidates(clock, {}, calls), names) == "blocked"
    calibrate.forget()
    assert calibrate.choose("linear-rows", "float32/8x8/rows=4", _candidates(clock, {}, calls), names) == "blocked"
    assert calls == [1]
    # Another shape or thread count is another choice.
    assert calibrate.choose("linear-rows", "float32/8x8/rows=2", _candidates(clock, {"aten": 1e-3, "onednn": 2e-3}, calls), names) == "aten"
    assert len(json.loads(store.read_text())["choices"]) == 2


def test_candidates_that_fail_are_left_out(store, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(calibrate, "_clock", clock)

    def broken(i):
        raise RuntimeError("no compiler")

    def make():
        return {"aten": clock.runner(2e-3), "compiled": broken}, 2

    assert calibrate.choose("linear-row", "float32/4x4", make, ("aten", "compiled")) == "aten"
    assert json.loads(store.read_text())["choices"]
    # None runs: the fallback, the first name.
    assert calibrate.choose("linear-row", "float32/4x5", lambda: ({"compiled": broken, "other": broken}, 2), ("aten", "compiled")) == "aten"


def test_one_candidate_is_not_timed(store):
    assert calibrate.choose("linear-row", "float16/4x4", lambda: ({"aten": None}, 2), ("aten", "compiled")) == "aten"
    assert not store.exists()


def test_a_corrupt_file_is_measured_again_and_rewritten(store, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(calibrate, "_clock", clock)
    store.write_text("{not json")
    assert calibrate.choose("linear-row", "float32/4x4", _candidates(clock, {"aten": 2e-3, "compiled": 1e-3}), ("aten", "compiled")) == "compiled"
    assert json.loads(store.read_text())["choices"]


def test_a_forced_choice_and_a_bad_one(store, monkeypatch):
    monkeypatch.setenv(calibrate.ENV, "linear-row=compiled, linear-rows=onednn")
    never = lambda: pytest.fail("a forced choice is not measured")  # noqa: E731
    assert calibrate.choose("linear-row", "x", never, ("aten", "compiled")) == "compiled"
    assert calibrate.choose("linear-rows", "x", never, ("aten", "onednn", "blocked")) == "onednn"
    monkeypatch.setenv(calibrate.ENV, "linear-row=fastest")
    with pytest.raises(LmatlasError, match="LMATLAS_KERNEL_CHOICE names 'fastest' for linear-row, which is none"):
        calibrate.choose("linear-row", "x", never, ("aten", "compiled"))
    monkeypatch.setenv(calibrate.ENV, "compiled")
    with pytest.raises(LmatlasError, match=r"LMATLAS_KERNEL_CHOICE must read kind=name\[,kind=name\]"):
        calibrate.choose("linear-row", "x", never, ("aten", "compiled"))


def test_the_weights_read_are_flushed_before_each_timed_pass(store, monkeypatch):
    """A candidate is timed on weights that come from memory, as a decode's do, not from a large
    last-level cache: the tensors the candidates name are flushed before every timed pass."""
    clock = FakeClock()
    monkeypatch.setattr(calibrate, "_clock", clock)
    weights = [torch.ones(4), torch.ones(4)]
    flushed = []
    monkeypatch.setattr(native, "evict", lambda tensors: flushed.append(list(tensors)))
    make = lambda: ({"aten": clock.runner(2e-3), "gemv": clock.runner(1e-3)}, 2, weights)  # noqa: E731
    assert calibrate.choose("linear-row", "float32/4x4", make, ("aten", "compiled", "gemv")) == "gemv"
    assert len(flushed) == 2 * calibrate.ROUNDS and all(f == weights for f in flushed)


def test_evict_leaves_the_data_whole():
    x = torch.arange(100_000, dtype=torch.float32)
    assert native.evict([x, x[:7]]) is True
    assert torch.equal(x, torch.arange(100_000, dtype=torch.float32))


def test_the_file_is_per_cpu(monkeypatch):
    first = calibrate.cpu_key()
    monkeypatch.setattr(native, "_cpu_flags", lambda: "flags : fpu sse2 avx2")
    second = calibrate.cpu_key()
    monkeypatch.setattr(native, "_cpu_flags", lambda: "flags : fpu sse2 avx2 avx512f avx512_vnni")
    assert len({first, second, calibrate.cpu_key()}) == 3


def test_test_weights_stream_past_the_caches_within_bounds():
    half = calibrate.WORKING_SET // 2
    rows, copies = calibrate.test_shape(50257, 768 * 4)  # an LM head: cut to half the set
    assert rows == half // (768 * 4) and copies * rows * 768 * 4 >= calibrate.WORKING_SET and copies <= 3
    assert calibrate.test_shape(8, 1024) == (8, calibrate.MAX_COPIES)
    rows, copies = calibrate.test_shape(3072, 768 * 4)
    assert rows == 3072 and copies * rows * 768 * 4 >= calibrate.WORKING_SET


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_each_linear_kernel_forced_matches_f_linear(dtype, bias, store, monkeypatch):
    """Every candidate of each kind, forced, against F.linear: float32 within 1e-5 (summation
    order), bfloat16 within its rounding of the output."""
    monkeypatch.setattr(linear, "MIN_COMPILED_ELEMENTS", 0)
    tol = 1e-5 if dtype == torch.float32 else 0.05
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(96, 70, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(70, 96, generator=g) * 0.1)
    layer = layer.to(dtype)
    x = torch.randn(6, 96, generator=g).to(dtype)
    want = torch.nn.functional.linear(x.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float())
    runtime.install(layer)
    with torch.inference_mode():
        for name in linear.ROW_KERNELS:
            monkeypatch.setenv(calibrate.ENV, f"linear-row={name}")
            layer._kernels = None
            got = layer(x[:1]).float()
            assert (got - want[:1]).abs().max().item() <= tol, name
        for name in linear.ROWS_KERNELS:
            if name == "blocked" and dtype != torch.float32:
                continue  # the C kernel is float32's (others take F.linear)
            monkeypatch.setenv(calibrate.ENV, f"linear-rows={name}")
            runtime.release(layer)
            layer._kernels = None
            with runtime.decode_rows(4):
                got = layer(x[:4]).float()
                prompt = layer(x).float()  # more rows than decoded: the packed copy or F.linear
            assert (got - want[:4]).abs().max().item() <= tol, name
            assert (prompt - want).abs().max().item() <= tol, name
            assert (layer._blocked is not None) == (name == "blocked")
            assert (layer._packed is not None) == (name == "onednn")
    runtime.uninstall(layer)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_bound_row_kernel_follows_the_layer(dtype, store, monkeypatch):
    """Once chosen, the C one-row kernel is bound to the layer's weight and bias (one check and one
    call per step); it must still see every change a user can make: weights changed in place, new
    storage, a new bias, another thread count, a strided input, gradients on."""
    monkeypatch.setattr(linear, "MIN_COMPILED_ELEMENTS", 0)
    monkeypatch.setenv(calibrate.ENV, "linear-row=gemv")
    g = torch.Generator().manual_seed(1)
    layer = torch.nn.Linear(96, 70).to(dtype)
    runtime.install(layer)
    x = torch.randn(1, 96, generator=g).to(dtype)

    def check():
        want = torch.nn.functional.linear(x.float(), layer.weight.float(), layer.bias.float())
        with torch.no_grad():
            got = layer(x)
        assert got.dtype == dtype and got.shape == (1, 70)
        # float32: summation order; bfloat16: one rounding of the output (8 bits) and of the sums
        tol = 1e-5 + want.abs() * (1e-6 if dtype == torch.float32 else 2**-8)
        assert ((got.float() - want).abs() <= tol).all()

    check()
    assert (layer._bound is not None) == (native.gemv_path(dtype) is not None)  # a CPU without AVX2: F.linear
    with torch.no_grad():
        layer.weight.mul_(-2)  # in place: the same memory
    check()
    layer.weight.data = torch.randn(70, 96, generator=g).to(dtype)  # new storage
    check()
    layer.bias = torch.nn.Parameter(torch.randn(70, generator=g).to(dtype))
    check()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        check()
    finally:
        torch.set_num_threads(threads)
    wide = torch.randn(1, 192, generator=g).to(dtype)
    x = wide[:, ::2]  # not contiguous
    check()
    y = layer(x)  # gradients on: autograd's path
    assert y.requires_grad
    runtime.uninstall(layer)


def test_a_layer_measures_its_own_candidates(store, monkeypatch):
    """Unforced, a layer's first call on a decode times the candidates that can run here (real
    kernels, fake clock) and stores which won; the result is F.linear's."""
    monkeypatch.setattr(linear, "MIN_COMPILED_ELEMENTS", 0)
    layer = torch.nn.Linear(64, 48)
    runtime.install(layer)
    x = torch.randn(4, 64)
    with torch.inference_mode():
        want = torch.nn.functional.linear(x, layer.weight, layer.bias)
        one = layer(x[:1])
        with runtime.decode_rows(4):
            rows = layer(x)
    assert (one - want[:1]).abs().max().item() < 1e-5 and (rows - want).abs().max().item() < 1e-5
    choices = json.loads(store.read_text())["choices"]
    threads = torch.get_num_threads()
    row = choices[f"linear-row/float32/48x64/bias=True/threads={threads}"]
    several = choices[f"linear-rows/float32/48x64/bias=True/rows=4/threads={threads}"]
    assert row["choice"] in linear.ROW_KERNELS and set(row["us"]) <= set(linear.ROW_KERNELS)
    expected = {"aten", "onednn"} | ({"blocked"} if native.library() is not None else set())
    assert several["choice"] in expected and set(several["us"]) == expected
    runtime.uninstall(layer)


def test_a_quantized_layer_measures_its_prompt_paths(store, monkeypatch):
    """A prompt's rows (more than a step's 8) take the C kernels or the dequantized weights,
    whichever was measured faster for the matrix and the power of two of rows at or above theirs;
    each, forced, gives F.linear's numbers within the int8 activations' rounding."""
    from lmatlas.runtime import quant_formats
    from lmatlas.runtime.quantized import QuantizedLinear

    w = torch.randn(40, 64) * 0.1
    layer = QuantizedLinear(64, 40, "q4_1", quant_formats.quantize(w, "q4_1"))
    x = torch.randn(20, 64)
    want = torch.nn.functional.linear(x, quant_formats.dequantize(layer.blocks, "q4_1"))
    runtime.install(layer)
    calls = []
    real = quant_kernels.quant_linear
    monkeypatch.setattr(quant_kernels, "quant_linear", lambda *a: calls.append(a[0].shape[0]) or real(*a))
    with torch.inference_mode():
        got = layer(x)
        again = layer(x[:17])  # the same bucket (32 rows): no second measurement
    path = quant_kernels.quant_path()
    entries = json.loads(store.read_text())["choices"]
    (key, entry), = entries.items()
    assert key == f"quant-rows/q4_1/40x64/rows=32/{path}/threads={torch.get_num_threads()}"
    assert set(entry["us"]) == {"dequantize", "kernel"} and entry["choice"] in entry["us"]
    assert (got - want).abs().max().item() < 0.05 and (again - want[:17]).abs().max().item() < 0.05
    for name in ("kernel", "dequantize"):
        monkeypatch.setenv(calibrate.ENV, f"quant-rows={name}")
        layer._paths = None
        calls.clear()
        with torch.inference_mode():
            got = layer(x)
        assert (got - want).abs().max().item() < 0.05
        assert (calls == [20]) == (name == "kernel")
    runtime.uninstall(layer)


def test_measuring_leaves_the_random_generator_as_it_was(store, saved):
    """The test weights are drawn from PyTorch's generator, which is put back: a seeded sampled
    decode gives the same tokens when its first use of a shape measures the kernels (an empty
    choices file, as on a new machine) and when the choices are stored."""
    _, model = saved("gpt2")
    ids = torch.tensor([[5, 9, 2, 7]])

    def sample():
        torch.manual_seed(3)
        return model.generate(ids, max_new_tokens=8, do_sample=True, temperature=1.0)

    before = torch.random.get_rng_state()
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    calibrate.choose("test", "shape", lambda: ({"a": lambda i: torch.rand(3), "b": lambda i: torch.rand(3)}, 2), ("a", "b"))
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.random.set_rng_state(before)
    linear.MIN_COMPILED_ELEMENTS, saved_min = 0, linear.MIN_COMPILED_ELEMENTS
    try:
        calibrate.forget()
        first = sample()  # measures each shape's kernels
        assert json.loads(store.read_text())  # it did
        assert torch.equal(sample(), first)  # stored now: nothing measured
    finally:
        linear.MIN_COMPILED_ELEMENTS = saved_min
