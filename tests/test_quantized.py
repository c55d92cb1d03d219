"""Quantized matrices in llama.cpp's block formats (lmatlas.runtime.quant_formats, .quantized and
the C kernels of csrc/quant*.c): the bytes of the ``gguf`` package, and every kernel path against
PyTorch on the dequantized weights.

Tolerances. The kernels quantize each row of activations to int8 blocks of 32 (scale max |x| /
127, rounded half away from zero), so against PyTorch's ``F.linear`` on the dequantized weights
and float activations an output may differ by the activations' rounding, at most
sum over blocks of max |x| / 254 times the sum of |w| over the block (the bound ``rounding``
computes), plus float32 summation error. Against the same product in float64 with the kernels'
own int8 activations, only float32 rounding remains: the integer sums are exact, and each block
adds a few float32 roundings, so at most (blocks + 8) x 4 x 2^-24 x the sum of the terms' magnitudes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmatlas import LmatlasError, runtime
from lmatlas.runtime import native, quant_formats, quant_kernels
from lmatlas.runtime.quantized import MAX_KERNEL_ROWS, QuantizedLinear

from .reference import require

KINDS = tuple(quant_formats.TYPES)
EPS = 2.0**-24
# (out, in): rows not a multiple of any kernel block, in a multiple of 32 only
SHAPES = [(1, 32), (37, 96), (129, 576), (16, 160)]


def gguf_type(kind: str):
    return require("gguf").GGMLQuantizationType[kind.upper()]


def awkward(rows: int, columns: int, seed: int) -> torch.Tensor:
    """Random weights with the blocks that test a quantizer's edges: all zeros, ties between +x
    and -x for the largest magnitude, values halfway between two steps, tiny and huge scales."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, columns, generator=g)
    flat = w.view(-1, 32)
    n = flat.shape[0]
    flat[0] = 0
    if n > 1:
        flat[1] = torch.tensor([1.0, -1.0] * 16)
    if n > 2:
        flat[2] = torch.arange(32) / 2 - 8  # halves: rounding ties
    if n > 3:
        flat[3] *= 1e-6
    if n > 4:
        flat[4] *= 1e3
    if n > 5:
        flat[5] = torch.round(flat[5] * 254) / 2
    return w


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 32), (37, 96), (64, 576), (7, 1536)])
def test_quantize_gives_the_bytes_of_the_gguf_package(kind, shape):
    gguf = require("gguf")
    for seed in range(3):
        w = awkward(*shape, seed) * (10.0 ** (seed - 1))
        theirs = gguf.quants.quantize(w.numpy(), gguf_type(kind))
        for quantize in (quant_formats.quantize, quant_formats.quantize_in_torch):  # C, then PyTorch
            ours = quantize(w, kind)
            assert ours.dtype == torch.uint8 and ours.shape == theirs.shape
            assert np.array_equal(ours.numpy(), theirs)
        want = gguf.quants.dequantize(theirs, gguf_type(kind)).astype(np.float32).reshape(shape)
        for dequantize in (quant_formats.dequantize, quant_formats.dequantize_in_torch):
            back = dequantize(ours, kind)
            assert np.array_equal(back.numpy().view(np.uint32), want.view(np.uint32))  # to the bit


def test_block_sizes_are_ggml_s():
    gguf = require("gguf")
    for kind in quant_formats.TYPES.values():
        assert gguf.GGML_QUANT_SIZES[gguf_type(kind.name)] == (quant_formats.BLOCK, kind.block_bytes)
        assert int(gguf_type(kind.name)) == kind.id


def test_bad_input_one_sentence():
    with pytest.raises(LmatlasError, match=r"^quantize='q5_0' is not a type lmatlas quantizes to; use one of q8_0, q4_0, q4_1$"):
        quant_formats.quantize(torch.zeros(4, 32), "q5_0")
    with pytest.raises(LmatlasError, match=r"^a matrix of shape \(4, 48\) cannot be quantized: its rows are not whole blocks of 32$"):
        quant_formats.quantize(torch.zeros(4, 48), "q8_0")


def kernel_inputs(out_features: int, in_features: int, rows: int, kind: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=g) * 0.1
    x = torch.randn(rows, in_features, generator=g)
    x[0, :32] *= 30  # a block with an outlier-sized scale
    bias = torch.randn(out_features, generator=g) if seed % 2 else None
    return w, x, bias, quant_formats.quantize(w, kind)


def rounding(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The most that int8 activations (blocks of 32, round to nearest) move each output."""
    step = x.reshape(x.shape[0], -1, 32).abs().amax(-1, keepdim=True) / 254
    return step.expand(-1, -1, 32).reshape(x.shape).double() @ w.abs().double().T


def test_activations_quantized_as_ggml():
    """Blocks of 32, scale max |x| / 127, values rounded half away from zero."""
    x = torch.randn(3, 96) * 4
    x[1, :32] = torch.arange(32) * 127 / 62  # halfway values: round away from zero
    q, d, s = quant_kernels.quant_activations(x)
    blocks = x.reshape(3, 3, 32)
    scale = blocks.abs().amax(-1) / 127
    v = blocks * (1 / scale)[..., None]
    assert torch.equal(d, scale)
    assert torch.equal(q.reshape(3, 3, 32).float(), torch.sign(v) * torch.floor(v.abs() + 0.5))
    assert torch.equal(s, scale * q.reshape(3, 3, 32).sum(-1).float())


def forced(path: str, monkeypatch) -> bool:
    """Force ``path`` (and the kernels for a prompt's rows too, which a CPU may find slower than
    the dequantized weights: test_calibrate.py); False (having checked the one sentence) where
    this CPU cannot run it."""
    monkeypatch.setenv("LMATLAS_QUANT_PATH", path)
    monkeypatch.setenv("LMATLAS_KERNEL_CHOICE", "quant-rows=kernel")
    if path not in quant_kernels.quant_paths():
        with pytest.raises(LmatlasError, match=rf"^LMATLAS_QUANT_PATH={path}: this CPU cannot run that path \(it runs scalar"):
            quant_kernels.quant_path()
        return False
    assert quant_kernels.quant_path() == path
    return True


def check_layer(kind, blocks, x, bias) -> None:
    """The installed layer against PyTorch on the dequantized weights (tolerances: the module's)."""
    out_features, in_features, rows = blocks.shape[0], x.shape[1], x.shape[0]
    layer = QuantizedLinear(in_features, out_features, kind, blocks, bias)
    runtime.install(layer)
    with torch.no_grad():
        got = layer(x).double()
    wd = quant_formats.dequantize(blocks, kind).double()
    b = torch.zeros(out_features, dtype=torch.float64) if bias is None else bias.double()
    # the kernels' own int8 activations, in float64: float32 summation error only
    q, d, _ = quant_kernels.quant_activations(x)
    xq = (q.double().reshape(rows, -1, 32) * d.double()[..., None]).reshape(rows, -1)
    magnitude = xq.abs() @ wd.abs().T + b.abs()
    exact_tol = (in_features // 32 + 8) * 4 * EPS * magnitude + 1e-30
    assert ((got - (xq @ wd.T + b)).abs() <= exact_tol).all(), (kind, out_features, in_features, rows)
    # float activations: within the activations' rounding
    want = torch.nn.functional.linear(x, wd.float(), None if bias is None else bias).double()
    tol = rounding(x, wd) + exact_tol + in_features * EPS * (x.abs().double() @ wd.abs().T + b.abs())
    assert ((got - want).abs() <= tol).all(), (kind, out_features, in_features, rows)


@pytest.mark.parametrize("path", quant_kernels.QUANT_PATHS)
def test_every_path_against_pytorch(path, monkeypatch):
    """Each kernel path, forced: all types, odd shapes, 1 to 8 rows and a short prompt's 17."""
    if not forced(path, monkeypatch):
        return
    for kind in KINDS:
        for (out_features, in_features), seed in zip(SHAPES, range(len(SHAPES))):
            for rows in (*range(1, 9), 17):
                _, x, bias, blocks = kernel_inputs(out_features, in_features, rows, kind, seed)
                check_layer(kind, blocks, x, bias)


@pytest.mark.parametrize("path", quant_kernels.QUANT_PATHS)
def test_k_quants_as_stored(path, monkeypatch):
    """Q4_K, Q5_K and Q6_K blocks (random bytes with small scales, as a file could hold: lmatlas
    does not make them), on each path, against the gguf package's dequantization."""
    from .test_gguf_quant import random_k_blocks

    if not forced(path, monkeypatch):
        return
    for name, kind in (("Q4_K", quant_formats.Q4_K), ("Q5_K", quant_formats.Q5_K), ("Q6_K", quant_formats.Q6_K)):
        for (out_features, in_features), seed in (((37, 256), 1), ((5, 768), 2)):
            raw, _ = random_k_blocks(name, (out_features, in_features), seed)
            blocks = torch.from_numpy(raw)
            for rows in (1, 3, 8, 11):
                g = torch.Generator().manual_seed(rows)
                x = torch.randn(rows, in_features, generator=g)
                check_layer(kind, blocks, x, torch.randn(out_features, generator=g) if rows % 2 else None)
    with pytest.raises(LmatlasError, match=r"^q4_k matrices run as a file stores them; lmatlas quantizes to q8_0, q4_0, q4_1$"):
        quant_formats.quantize(torch.zeros(2, 256), quant_formats.Q4_K)


@pytest.mark.parametrize("path", quant_kernels.QUANT_PATHS)
def test_q5_as_stored(path, monkeypatch):
    """Q5_0 and Q5_1 blocks, made by the gguf package (lmatlas does not make them), on each path,
    against the gguf package's dequantization; lmatlas' dequantization gives its floats to the
    bit; quantizing to them is one sentence."""
    gguf = require("gguf")
    if not forced(path, monkeypatch):
        return
    for kind in (quant_formats.Q5_0, quant_formats.Q5_1):
        for (out_features, in_features), seed in (((37, 96), 1), ((5, 1536), 2), ((64, 576), 3)):
            w = awkward(out_features, in_features, seed)
            raw = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType(kind.id))
            blocks = torch.from_numpy(raw)
            want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(kind.id)).astype(np.float32)
            assert np.array_equal(quant_formats.dequantize(blocks, kind).numpy().view(np.uint32),
                                  want.reshape(out_features, in_features).view(np.uint32))
            for rows in (1, 3, 8, 11):
                g = torch.Generator().manual_seed(rows)
                x = torch.randn(rows, in_features, generator=g)
                check_layer(kind, blocks, x, torch.randn(out_features, generator=g) if rows % 2 else None)
        with pytest.raises(LmatlasError, match=rf"^{kind.name} matrices run as a file stores them; lmatlas quantizes to q8_0, q4_0, q4_1$"):
            quant_formats.quantize(torch.zeros(2, 64), kind)
        with pytest.raises(LmatlasError, match=rf"^{kind.name} matrices run as a file stores them"):
            quant_formats.quantize_in_torch(torch.zeros(2, 64), kind)


def test_paths_agree():
    """The integer sums are exact: the paths differ only in the order of the float32 sums."""
    paths = quant_kernels.quant_paths()
    assert paths[0] == "scalar"
    for kind in KINDS:
        w, x, bias, blocks = kernel_inputs(129, 576, 5, kind, 1)
        outs = [quant_kernels.quant_linear(x, blocks, quant_formats.TYPES[kind].id, bias, 129, p) for p in paths]
        for other in outs[1:]:
            assert (other - outs[0]).abs().max().item() <= 1e-4 * outs[0].abs().max().item()


def stored_blocks(kind: quant_formats.QuantType, out_features: int, in_features: int, seed: int) -> torch.Tensor:
    """Blocks of a type lmatlas runs but does not make, as a file could hold them: Q5_0 and Q5_1
    quantized by the gguf package, the K-quants random bytes with small scales."""
    gguf = require("gguf")
    if kind.block != 32:
        from .test_gguf_quant import random_k_blocks

        return torch.from_numpy(random_k_blocks(kind.name.upper(), (out_features, in_features), seed)[0])
    w = awkward(out_features, in_features, seed).numpy()
    return torch.from_numpy(gguf.quants.quantize(w, gguf.GGMLQuantizationType(kind.id)))


STORED = (quant_formats.Q5_0, quant_formats.Q5_1, quant_formats.Q4_K, quant_formats.Q5_K, quant_formats.Q6_K)


def test_paths_agree_and_gate_on_stored_types():
    """The types a file brings: every path gives the scalar path's numbers up to the order of the
    float32 sums, and the gated MLP's one call (each path) what its two layers give."""
    from lmatlas.runtime.quantized import gated_step

    F = torch.nn.functional
    x = torch.randn(5, 512, generator=torch.Generator().manual_seed(0))
    for kind in STORED:
        gate_blocks, up_blocks = stored_blocks(kind, 33, 512, 1), stored_blocks(kind, 33, 512, 2)
        outs = [quant_kernels.quant_linear(x, gate_blocks, kind.id, None, 33, p) for p in quant_kernels.quant_paths()]
        for other in outs[1:]:
            assert (other - outs[0]).abs().max().item() <= 1e-4 * outs[0].abs().max().item(), kind
        for path in quant_kernels.quant_paths():
            got = quant_kernels.quant_gated(x, gate_blocks, up_blocks, kind.id, 33, path)
            up = quant_kernels.quant_linear(x, up_blocks, kind.id, None, 33, path)
            want = F.silu(quant_kernels.quant_linear(x, gate_blocks, kind.id, None, 33, path)) * up
            assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item()), (kind, path)
        gate, up = QuantizedLinear(512, 33, kind, gate_blocks), QuantizedLinear(512, 33, kind, up_blocks)
        runtime.install(gate)
        runtime.install(up)
        with torch.no_grad():
            want = F.silu(gate(x[:2])) * up(x[:2])
            assert (gated_step(x[:2], gate, up, F.silu) - want).abs().max().item() <= 1e-5 * want.abs().max().item()


def test_a_layer_of_part_blocks_is_refused():
    """A width that is not a whole number of the type's blocks (32, or 256 for the K-quants)."""
    with pytest.raises(ValueError, match=r"^a q5_k matrix's rows are whole blocks of 256 weights, not 288$"):
        QuantizedLinear(288, 2, quant_formats.Q5_K, torch.zeros(2, 176, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"^a q8_0 matrix's rows are whole blocks of 32 weights, not 40$"):
        QuantizedLinear(40, 2, "q8_0", torch.zeros(2, 34, dtype=torch.uint8))


def test_unknown_path_one_sentence(monkeypatch):
    monkeypatch.setenv("LMATLAS_QUANT_PATH", "neon")
    with pytest.raises(LmatlasError, match=r"^LMATLAS_QUANT_PATH='neon' names no path of the quantized kernels; use one of scalar, avx2, avx512vnni$"):
        quant_kernels.quant_path()


def test_a_path_the_cpu_lacks_one_sentence(monkeypatch):
    """As on a CPU without AVX2 (this one's answer replaced)."""
    monkeypatch.setattr(quant_kernels, "quant_paths", lambda: ("scalar",))
    monkeypatch.setenv("LMATLAS_QUANT_PATH", "avx2")
    with pytest.raises(LmatlasError, match=r"^LMATLAS_QUANT_PATH=avx2: this CPU cannot run that path \(it runs scalar\)$"):
        quant_kernels.quant_path()
    monkeypatch.delenv("LMATLAS_QUANT_PATH")
    assert quant_kernels.quant_path() == "scalar"


def test_the_layer_without_the_runtime_is_f_linear_on_the_dequantized_weight(monkeypatch):
    """PyTorch's path, tile by tile (a small tile here): the float model the blocks stand for;
    gradients reach the input."""
    monkeypatch.setattr("lmatlas.runtime.quantized.TILE_ELEMENTS", 96 * 10)
    w, x, bias, blocks = kernel_inputs(37, 96, 4, "q4_1", 1)
    layer = QuantizedLinear(96, 37, "q4_1", blocks, bias)
    wd = quant_formats.dequantize(blocks, "q4_1")
    assert torch.equal(layer.weight, wd)
    x.requires_grad_(True)
    y = layer(x)
    assert (y - torch.nn.functional.linear(x, wd, bias)).abs().max().item() <= 1e-5
    y.sum().backward()
    assert x.grad is not None and not layer.blocks.requires_grad
    # Installed, but with gradients or more rows than the kernels take: PyTorch's path still.
    runtime.install(layer)
    assert layer.kernels and runtime.installed(layer)
    assert torch.equal(layer(x), y)
    many = torch.randn(MAX_KERNEL_ROWS + 1, 96)
    with torch.no_grad():
        assert (layer(many) - torch.nn.functional.linear(many, wd, bias)).abs().max().item() <= 1e-5
    runtime.uninstall(layer)
    assert not layer.kernels


def test_the_layer_takes_other_dtypes_and_batch_shapes():
    w, x, bias, blocks = kernel_inputs(40, 64, 6, "q8_0", 1)
    layer = QuantizedLinear.of(torch.nn.Linear(64, 40), "q8_0", w)
    runtime.install(layer)
    with torch.no_grad():
        y = layer(x.reshape(2, 3, 64))
        half = layer.to(torch.bfloat16)(x.reshape(2, 3, 64).bfloat16())
    assert y.shape == (2, 3, 40) and half.dtype == torch.bfloat16
    assert (half.float() - y).abs().max().item() <= 0.05 * y.abs().max().item()


def test_the_kernels_take_the_thread_count_they_are_given():
    before = torch.get_num_threads()
    _, x, _, blocks = kernel_inputs(40, 64, 3, "q4_0", 0)
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            for path in quant_kernels.quant_paths():
                quant_kernels.quant_linear(x, blocks, quant_formats.Q4_0.id, None, 40, path)
                assert native.threads_used() == n
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("path", quant_kernels.QUANT_PATHS)
def test_a_gated_mlp_step_in_one_call(path, monkeypatch):
    """SwiGLU's two quantized products on one quantization of x (``gated_step``, installed on
    every MLP): the two layers' own kernels, SiLU and the product, within float32 rounding; where
    it does not apply it declines and the MLP runs the layers."""
    from lmatlas.runtime.quantized import gated_step

    if not forced(path, monkeypatch):
        return
    F = torch.nn.functional
    for kind in KINDS:
        _, x, _, gate_blocks = kernel_inputs(40, 96, 5, kind, 0)
        _, _, _, up_blocks = kernel_inputs(40, 96, 5, kind, 2)
        gate, up = QuantizedLinear(96, 40, kind, gate_blocks), QuantizedLinear(96, 40, kind, up_blocks)
        runtime.install(gate)
        runtime.install(up)
        with torch.no_grad():
            want = F.silu(gate(x)) * up(x)
            got = gated_step(x, gate, up, F.silu)
            assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
            assert gated_step(x, gate, up, F.gelu) is None  # another activation
            assert gated_step(torch.randn(9, 96), gate, up, F.silu) is None  # more rows than a step's
            assert gated_step(x.double(), gate, up, F.silu) is None
        runtime.uninstall(up)
        assert gated_step(x, gate, up, F.silu) is None  # one of them not installed
        runtime.uninstall(gate)
    other = QuantizedLinear(96, 40, "q8_0", quant_formats.quantize(torch.randn(40, 96), "q8_0"))
    same = QuantizedLinear(96, 40, "q4_1", quant_formats.quantize(torch.randn(40, 96), "q4_1"))
    runtime.install(other)
    runtime.install(same)
    assert gated_step(torch.randn(2, 96), same, other, F.silu) is None  # two kinds
