"""The linear layers of a decode: where decoding spends its time.

Decoding one token reads every weight once, so at batch 1 a token costs (weight bytes) /
(memory bandwidth) at best, and a batch of a few rows barely more. Which kernel comes nearest
that bound depends on the CPU, so for each case there are candidates, and the first use of a
shape on a machine times them and keeps the fastest (``calibrate``; figures:
``benchmarks/README.md``):

- one row (batch-1 decoding): ATen's ``F.linear`` (MKL's GEMV), or the matrix-vector product
  written as a fused multiply-reduce and compiled by TorchInductor into one vectorised,
  multi-threaded loop that reads each weight row once (float32 accumulation whatever the
  weights' dtype), or for float32 and bfloat16 ``native.gemv`` (C, reading several far-apart
  rows at once; AVX-512 or AVX2). float16 weights take ATen's own fp16 GEMV;
- 2 to 64 rows (batched or beam decoding, told by the generation engine: ``decode_rows``):
  ATen's linear; oneDNN with the weights reordered once into its blocked layout
  (``torch.ops.mkldnn``; float16 weights, which oneDNN cannot multiply on CPUs without
  AVX512-FP16, widened to a float32 copy); or, for float32 and up to 8 rows,
  ``native.linear_rows``, a C loop over a copy of the weight stored in blocks of 16 outputs.
  The copies are made while such a decode runs, only while the machine has room for them
  (``memory.room_for``; otherwise ATen's linear), and kept until ``release``. Once packed for
  oneDNN, a weight serves every row count (the prompt, an encoder-decoder's source); with the C
  kernel decoding, a prompt takes ``F.linear`` rather than a second copy;
- anything else (training, other devices, weights small enough to stay in cache): ``F.linear``.

The compiled loop is built at its first use (about 10 s with an empty TorchInductor cache, which
then keeps it on disk; a second or so later). The numbers change only by summation order (max
abs diff ~1e-6 in fp32, inside the parity tolerance). Without a C++ compiler the compiled loop
and the C kernel are left out. ``lmatlas.runtime.install`` swaps a model's ``nn.Linear`` modules
for ``CpuLinear``; ``uninstall`` swaps them back.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import calibrate, memory, native

_state = threading.local()
_compiled: dict[str, object] = {}
_broken: set[str] = set()
# Rows decoded at once up to which the engine packs the weights (a second copy): beyond, decoding is
# bound by compute rather than memory, and the copy gains less (MKL comes within 10-25%).
MAX_PACKED_ROWS = 64
# Smaller weights stay with F.linear (one row or several): they sit in cache, and a kernel call
# costs more than it saves.
MIN_COMPILED_ELEMENTS = 1 << 18
# The candidates (``calibrate``), the fallback first.
ROW_KERNELS = ("aten", "compiled", "gemv")
ROWS_KERNELS = ("aten", "onednn", "blocked")


def _rows() -> int:
    return getattr(_state, "rows", 1)


@contextlib.contextmanager
def decode_rows(rows: int) -> Iterator[None]:
    """Declare that forward passes inside decode ``rows`` sequences at a time (the engine's hint:
    with more than one, linear layers may keep a oneDNN-packed copy of their weights)."""
    previous = _rows()
    _state.rows = rows
    try:
        yield
    finally:
        _state.rows = previous


def weight_version(w: torch.Tensor) -> tuple[int, int]:
    """What a copy of ``w`` was made from: its storage, and its version counter where it has one
    (a tensor made under ``torch.inference_mode`` has none, and cannot be changed in place
    outside it)."""
    return w.data_ptr(), -1 if w.is_inference() else w._version


def _gemv(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Multiply and reduce in one pass over w, accumulating in float32.
    return (w.float() * x.float()).sum(-1).to(w.dtype)


def _gemv_bias(w: torch.Tensor, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((w.float() * x.float()).sum(-1) + b.float()).to(w.dtype)


def _compiled_gemv(bias: bool):
    key = "gemv_bias" if bias else "gemv"
    if "gemv" in _broken:
        return None
    fn = _compiled.get(key)
    if fn is None:
        fn = torch.compile(_gemv_bias if bias else _gemv, dynamic=True, fullgraph=True)
        _compiled[key] = fn
    return fn


def _disable(error: Exception) -> None:
    _broken.add("gemv")
    warnings.warn(
        f"lmatlas: the compiled CPU matrix-vector kernel is unavailable ({type(error).__name__}: {error}); "
        "decoding falls back to plain PyTorch, which is slower",
        RuntimeWarning,
        stacklevel=3,
    )


class CpuLinear(nn.Linear):
    """``nn.Linear`` with the kernels above for inference on CPU; same parameters, same state dict.

    Models get it by class swap (``lmatlas.runtime.install``); training, autograd and other devices take
    ``F.linear`` unchanged. Where several kernels could run a call, the one this CPU runs fastest
    for the shape is measured at first use (``calibrate.choose``) and remembered.
    """

    _packed: torch.Tensor | None = None
    _packed_version: tuple[int, int] = (0, -1)
    _blocked: torch.Tensor | None = None
    _blocked_version: tuple[int, int] = (0, -1)
    _no_room: bool = False  # a copy was refused for want of memory (``_room_for``)
    _kernels: dict | None = None  # (rows decoded, threads) -> the kernel chosen
    _bound: "_BoundRow | None" = None  # the C one-row kernel, once chosen, bound to the weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bound = self._bound
        if bound is not None and x.numel() == bound.k and bound.fits(self, x):
            return bound.run(x, bound.threads).view(x.shape[:-1] + (bound.n,))
        w = self.weight
        if x.device.type != "cpu" or (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad)):
            return F.linear(x, w, self.bias)
        if w.numel() < MIN_COMPILED_ELEMENTS:
            return F.linear(x, w, self.bias)  # small weights sit in cache: a kernel call costs more than it saves
        k = x.shape[-1]
        rows = x.numel() // k if k else 0
        if rows == 1:
            kernel = self._kernel(1)
            if kernel == "compiled":
                y = self._gemv(x.reshape(1, k))
                if y is not None:
                    return y.reshape(*x.shape[:-1], w.shape[0])
            elif kernel == "gemv" and x.dtype == w.dtype and w.is_contiguous():
                path = native.gemv_path(w.dtype)
                b = self.bias
                if path is not None and (b is None or (b.dtype == w.dtype and b.is_contiguous())):
                    if bound is None or not bound.current(self):
                        bound = self._bound = _BoundRow(self, path)
                    if bound.fits(self, x):
                        return bound.run(x, bound.threads).view(x.shape[:-1] + (bound.n,))
                    return native.gemv(x.reshape(k), w, None if b is None else b.detach(), path).view(
                        x.shape[:-1] + (bound.n,))
            return F.linear(x, w, self.bias)
        kernel = self._kernel(_rows()) if 1 < _rows() <= MAX_PACKED_ROWS else None
        if kernel == "blocked" and rows <= native.MAX_LINEAR_ROWS and x.dtype == w.dtype == torch.float32 \
                and native.library() is not None:
            blocked = self._block()
            if blocked is not None:
                return native.linear_rows(x.reshape(rows, k), blocked, self.bias, w.shape[0]).reshape(
                    *x.shape[:-1], w.shape[0])
        # Once packed, a weight serves every row count (the prompt, an encoder-decoder's source);
        # with the C kernel decoding, a prompt takes F.linear rather than a second copy.
        current = self._packed is not None and self._packed_version == weight_version(w)
        if kernel == "onednn" or (current and kernel != "blocked"):
            packed = self._pack()
            if packed is not None:
                return _onednn(x, packed, self.bias, w.dtype).reshape(*x.shape[:-1], w.shape[0])
        return F.linear(x, w, self.bias)

    def _kernel(self, rows: int) -> str:
        """The kernel for a decode of ``rows`` rows on this thread count: chosen once per shape
        and CPU (``calibrate``), then remembered by the layer."""
        memo = (rows, torch.get_num_threads())
        if self._kernels is None:
            self._kernels = {}
        kernel = self._kernels.get(memo)
        if kernel is None:
            w = self.weight
            shape = f"{str(w.dtype).removeprefix('torch.')}/{w.shape[0]}x{w.shape[1]}/bias={self.bias is not None}"
            if rows == 1:
                kernel = calibrate.choose("linear-row", shape, lambda: _row_candidates(w, self.bias), ROW_KERNELS)
            else:
                kernel = calibrate.choose("linear-rows", f"{shape}/rows={rows}",
                                          lambda: _rows_candidates(w, self.bias, rows), ROWS_KERNELS)
            self._kernels[memo] = kernel
        return kernel

    def _gemv(self, row: torch.Tensor) -> torch.Tensor | None:
        b = self.bias
        fn = _compiled_gemv(b is not None)
        if fn is None:
            return None
        # A plain tensor (not a Parameter) and a fresh row keep one compiled kernel for every
        # shape: no guard on parameter shapes or storage offsets.
        if row.storage_offset() or not row.is_contiguous():
            row = row.clone()
        args = (self.weight.detach(), row) + (() if b is None else (b.detach(),))
        try:
            return fn(*args)
        except Exception as e:  # no C++ compiler, an unsupported platform...
            _disable(e)
            return None

    def _block(self) -> torch.Tensor | None:
        if self._blocked is None or self._blocked_version != weight_version(self.weight):
            self._blocked = None  # the old copy goes before room is counted for the new one
            out, inp = self.weight.shape
            if not self._room_for(-(-out // native.BLOCK) * native.BLOCK * inp * 4):
                return None
            with torch.no_grad():
                self._blocked = native.block_weight(self.weight.detach())
            self._blocked_version = weight_version(self.weight)
        return self._blocked

    def _pack(self) -> torch.Tensor | None:
        if self._packed is None or self._packed_version != weight_version(self.weight):
            self._packed = None
            w = self.weight
            # float16 is widened to float32 first, then packed: two float32 copies for a while.
            if not self._room_for(w.numel() * (8 if w.dtype == torch.float16 else w.element_size())):
                return None
            packed = _onednn_pack(self.weight.detach(), max(_rows(), 2))
            if packed is None:
                return None
            self._packed = packed
            self._packed_version = weight_version(self.weight)
        return self._packed

    def _room_for(self, nbytes: int) -> bool:
        """Whether to make a copy of ``nbytes``: once refused for want of memory, the layer
        computes from its own weight until ``release``, so that a decode does not switch kernels
        (and summation orders) from one step to the next as other processes' memory comes and
        goes."""
        if not self._no_room and not memory.room_for(nbytes):
            self._no_room = True
        return not self._no_room

    def release(self) -> None:
        """Drop the packed copies (they are made again when needed, if there is room)."""
        self._packed = None
        self._blocked = None
        self._bound = None
        self._no_room = False


def _dropped():
    return None


class _BoundRow:
    """The C one-row kernel bound to a layer's weight and bias (``native.gemv_bound``), for the
    thread count it was chosen on: a decoding step's product then costs one check and one call,
    not the kernel choice and the argument handling again (a few µs per layer; a step of GPT-2
    has 49). It holds while the layer keeps the same tensors at the same addresses with the same
    shapes, the thread count and the dtype, and gradients are off; anything else takes the full
    path. It keeps the tensors it points into (their memory cannot be freed and reused while it
    holds their addresses); a copied or pickled layer gets None and binds again."""

    __slots__ = ("weight", "bias", "threads", "dtype", "k", "n", "run", "ptrs", "shapes", "kept")

    def __init__(self, layer: CpuLinear, path: str):
        w, b = layer.weight, layer.bias
        self.weight, self.bias = w, b
        self.threads, self.dtype = torch.get_num_threads(), w.dtype
        self.n, self.k = w.shape
        self.kept = (w.detach(), None if b is None else b.detach())
        self.ptrs = (w.data_ptr(), None if b is None else b.data_ptr())
        self.shapes = (w.shape, None if b is None else b.shape)
        self.run = native.gemv_bound(self.kept[0], self.kept[1], path)

    def current(self, layer: CpuLinear) -> bool:
        """Whether the binding still stands for ``layer`` on this thread count."""
        w, b = layer.weight, layer.bias
        return (
            w is self.weight and b is self.bias and torch.get_num_threads() == self.threads
            and (w.data_ptr(), None if b is None else b.data_ptr()) == self.ptrs
            and (w.shape, None if b is None else b.shape) == self.shapes
        )  # fmt: skip

    def fits(self, layer: CpuLinear, x: torch.Tensor) -> bool:
        """Whether ``layer(x)`` can take the bound kernel: a current binding, and a contiguous row
        on the CPU of the weight's dtype with no gradient to track."""
        return (
            not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            and x.is_cpu and x.dtype == self.dtype and x.is_contiguous() and self.current(layer)
        )  # fmt: skip

    def __reduce__(self):
        return _dropped, ()


def _onednn_pack(w: torch.Tensor, rows: int) -> torch.Tensor | None:
    """``w`` reordered into oneDNN's blocked layout for about ``rows`` rows, or None where oneDNN
    cannot take it. float16 weights, which oneDNN cannot multiply without AVX512-FP16, are
    widened to float32 first (exactly)."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        with torch.no_grad():
            return torch.ops.mkldnn._reorder_linear_weight(w.float() if w.dtype == torch.float16 else w, rows)
    except RuntimeError:
        return None


def _onednn(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    if dtype == torch.float16:
        # float16 widens exactly to float32: compute there (ATen's own float16 GEMM is slow
        # beyond one row).
        x2, bias = x2.float(), None if bias is None else bias.float()
    # The overload itself: resolving it from the packet costs a few µs per call.
    return torch.ops.mkldnn._linear_pointwise.default(x2, packed, bias, "none", [], "").to(dtype)


def _test_weights(w: torch.Tensor, bias: torch.Tensor | None, rows: int):
    """Weights like ``w`` (shape, dtype) for timing, enough copies not to stay in the caches, and
    an input of ``rows`` rows."""
    out, copies = calibrate.test_shape(w.shape[0], w.shape[1] * w.element_size())
    ws = [torch.empty(out, w.shape[1], dtype=w.dtype).uniform_(-0.05, 0.05) for _ in range(copies)]
    x = torch.empty(rows, w.shape[1], dtype=w.dtype).uniform_(-1, 1)
    b = None if bias is None else torch.zeros(out, dtype=bias.dtype)
    return ws, x, b, copies


def _row_candidates(w: torch.Tensor, bias: torch.Tensor | None):
    """One row: ATen's linear (MKL's GEMV), the compiled multiply-reduce, or the C kernel."""
    ws, x, b, copies = _test_weights(w, bias, 1)
    runners = {"aten": lambda i: F.linear(x, ws[i], b)}
    fn = _compiled_gemv(b is not None) if w.dtype != torch.float16 else None
    if fn is not None:
        runners["compiled"] = lambda i: fn(ws[i], x) if b is None else fn(ws[i], x, b)
    path = native.gemv_path(w.dtype)
    if path is not None:
        runners["gemv"] = lambda i: native.gemv(x.reshape(-1), ws[i], b, path)
    return runners, copies, ws


def _rows_candidates(w: torch.Tensor, bias: torch.Tensor | None, rows: int):
    """A few rows: ATen's linear, oneDNN on a packed copy, or (float32, up to
    ``native.MAX_LINEAR_ROWS`` rows) the C kernel on a blocked copy. Not flushed from the caches
    between passes: oneDNN's packed copies have no storage to flush, and flushing the others
    alone would favour it."""
    ws, x, b, copies = _test_weights(w, bias, rows)
    runners = {"aten": lambda i: F.linear(x, ws[i], b)}
    packed = [_onednn_pack(v, rows) for v in ws]
    if all(p is not None for p in packed):
        runners["onednn"] = lambda i: _onednn(x, packed[i], b, w.dtype)
    if w.dtype == torch.float32 and rows <= native.MAX_LINEAR_ROWS and native.library() is not None:
        blocked = [native.block_weight(v) for v in ws]
        runners["blocked"] = lambda i: native.linear_rows(x, blocked[i], b, ws[i].shape[0])
    return runners, copies


__all__ = ["CpuLinear", "MAX_PACKED_ROWS", "decode_rows", "weight_version"]
