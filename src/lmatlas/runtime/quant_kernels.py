"""The quantized kernels' bindings (``csrc/quant.c`` with ``quant_k.c``, ``quant_x86.c`` and
``quant_simd.h``, built into the runtime's one library by ``native``): linear layers on weights
kept in llama.cpp's block formats (Q8_0, Q4_0, Q4_1, and Q5_0, Q5_1 and the K-quants Q4_K,
Q5_K and Q6_K) for the rows of a step or a prompt, the activations quantized on the fly to int8
blocks for integer dot products; a scalar, an AVX2 and an AVX-512 VNNI path in one library, chosen at run time from the
CPU (``quant_path``; ``LMATLAS_QUANT_PATH`` forces one). And the quantization of a float matrix
into those blocks and back (``quant_quantize``, ``quant_dequantize``).

``runtime.quantized.QuantizedLinear`` calls ``quant_linear``; ``quant_gated`` takes a gated MLP's
two products (SwiGLU) on one quantization of x, for ``runtime.quantized.gated_step`` and the
layer step (``runtime.layer_step``).
"""

from __future__ import annotations

import ctypes
import os

import torch

from ..errors import LmatlasError
from . import native

QUANT_PATHS = ("scalar", "avx2", "avx512vnni")  # in quant.h's order
# The library's answer (with the library it came from), asked once rather than at every layer of every step.
_quant_paths: tuple[ctypes.CDLL, tuple[str, ...]] | None = None


def quant_paths() -> tuple[str, ...]:
    """The paths of the quantized kernels this CPU runs, slowest first (scalar always); none
    without the library."""
    global _quant_paths
    lib = native.library()
    if lib is None:
        return ()
    if _quant_paths is None or _quant_paths[0] is not lib:
        supported = lib.quant_paths()
        _quant_paths = (lib, tuple(name for i, name in enumerate(QUANT_PATHS) if supported >> i & 1))
    return _quant_paths[1]


def quant_path() -> str | None:
    """The path the quantized kernels take: ``LMATLAS_QUANT_PATH`` (scalar, avx2 or avx512vnni)
    where set, else the fastest this CPU runs; None without the library."""
    available = quant_paths()
    forced = os.environ.get("LMATLAS_QUANT_PATH", "").strip().lower()
    if forced and forced not in QUANT_PATHS:
        raise LmatlasError(
            f"LMATLAS_QUANT_PATH={forced!r} names no path of the quantized kernels; use one of {', '.join(QUANT_PATHS)}"
        )
    if not available:
        return None
    if forced and forced not in available:
        raise LmatlasError(f"LMATLAS_QUANT_PATH={forced}: this CPU cannot run that path (it runs {', '.join(available)})")
    return forced or available[-1]


def quant_linear(
    x: torch.Tensor, blocks: torch.Tensor, qtype: int, bias: torch.Tensor | None, out_features: int, path: str
) -> torch.Tensor:
    """``x @ w.T + bias`` for (rows, in) float32 ``x``, ``w`` the (out_features, in) matrix that
    ``blocks`` holds in ggml's ``qtype`` (a GGUF type id), on the kernels' ``path``. The caller
    checks the library, the type and the shapes (``in`` a multiple of 32)."""
    rows, inp = x.shape
    x = x.contiguous()
    y = torch.empty(rows, out_features, dtype=torch.float32)
    bias = None if bias is None else bias.contiguous()
    done = native.library().quant_linear(
        QUANT_PATHS.index(path), qtype, x.data_ptr(), blocks.data_ptr(), native._pointer(bias), y.data_ptr(), rows,
        out_features, inp, torch.get_num_threads(),
    )  # fmt: skip
    if done != 0:
        raise AssertionError(f"quant_linear refused its arguments ({done})")
    return y


def quant_gated(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, qtype: int, out_features: int,
                path: str) -> torch.Tensor:
    """``silu(x @ wg.T) * (x @ wu.T)`` for (rows, in) float32 ``x``, ``gate`` and ``up`` the blocks
    of two (out_features, in) matrices of ggml's ``qtype`` (a gated MLP's first half, x quantized
    once for both). The caller checks the library, the types and the shapes."""
    rows, inp = x.shape
    x = x.contiguous()
    y = torch.empty(rows, out_features, dtype=torch.float32)
    done = native.library().quant_gated(
        QUANT_PATHS.index(path), qtype, x.data_ptr(), gate.data_ptr(), up.data_ptr(), y.data_ptr(), rows,
        out_features, inp, torch.get_num_threads(),
    )  # fmt: skip
    if done != 0:
        raise AssertionError(f"quant_gated refused its arguments ({done})")
    return y


def quant_quantize(w: torch.Tensor, qtype: int, row_bytes: int) -> torch.Tensor | None:
    """A (rows, in) float32 matrix as (rows, ``row_bytes``) blocks of ggml's ``qtype``, the bytes
    ``quant_formats.quantize`` gives; None without the library."""
    lib = native.library()
    if lib is None:
        return None
    w = w.contiguous()
    out = torch.empty(w.shape[0], row_bytes, dtype=torch.uint8)
    if lib.quant_quantize(qtype, w.data_ptr(), w.shape[0], w.shape[1], out.data_ptr(), torch.get_num_threads()) != 0:
        raise AssertionError("quant_quantize refused its arguments")
    return out


def quant_dequantize(blocks: torch.Tensor, qtype: int, columns: int) -> torch.Tensor | None:
    """(rows, row bytes) blocks of ggml's ``qtype`` (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) as the (rows, ``columns``)
    float32 matrix ``quant_formats.dequantize`` gives; None without the library."""
    lib = native.library()
    if lib is None:
        return None
    blocks = blocks.contiguous()
    out = torch.empty(blocks.shape[0], columns, dtype=torch.float32)
    if lib.quant_dequantize(qtype, blocks.data_ptr(), blocks.shape[0], columns, out.data_ptr(), torch.get_num_threads()) != 0:
        raise AssertionError("quant_dequantize refused its arguments")
    return out


def quant_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernels' quantization of (rows, in) float32 activations: int8 values (rows, in), and
    per block of 32 the scale and the scale times the sum of the values (rows, in / 32)."""
    rows, inp = x.shape
    x = x.contiguous()
    q = torch.empty(rows, inp, dtype=torch.int8)
    d = torch.empty(rows, inp // 32, dtype=torch.float32)
    s = torch.empty_like(d)
    native.library().quant_activations(x.data_ptr(), rows, inp, q.data_ptr(), d.data_ptr(), s.data_ptr())
    return q, d, s


__all__ = [
    "QUANT_PATHS", "quant_activations", "quant_dequantize", "quant_gated", "quant_linear", "quant_path", "quant_paths",
    "quant_quantize",
]
