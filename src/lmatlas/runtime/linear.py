"""The linear layers of a decode: where decoding spends its time.

Decoding one token reads every weight once, so at batch 1 a token costs (weight bytes) /
(memory bandwidth) at best. PyTorch's default ``F.linear`` streams float32 weights well below
that bound for one row, and small-M GEMMs (a batch of 8 rows) at a fraction of it. So, for
inference on the CPU (figures: ``benchmarks/README.md``):

- one row (batch-1 decoding): the matrix-vector product written as a fused multiply-reduce and
  compiled by TorchInductor into one vectorised, multi-threaded loop that reads each weight row
  once (float32 accumulation whatever the weights' dtype); float16 weights use ATen's own fp16
  GEMV, which already runs at the bandwidth bound;
- 2 to 8 rows of float32 (batched or beam decoding): ``native.linear_rows``, a C loop over a
  copy of the weight stored in blocks of 16 outputs, made while the generation engine says that
  several rows are being decoded (a second copy of the weights, kept until ``release``; see
  ``decode_rows``). The prompt or source of such a call (more rows) takes ``F.linear``;
- otherwise a few rows (up to 64, float16 weights, or no C compiler): oneDNN with the weights
  reordered once into its blocked layout (``torch.ops.mkldnn``), made under the same hint.
  float16 weights, which oneDNN cannot multiply on CPUs without AVX512-FP16, get a float32 copy
  (float16 widens exactly) — twice their size. Once packed, a weight serves every row count (the
  prompt, an encoder-decoder's source);
- anything else (training, other devices, one-row decoding's prompt): ``F.linear``.

The first call compiles the loop (about 10 s with an empty TorchInductor cache, which then keeps
it on disk; a second or so later). The numbers change only by summation order (max abs diff
~1e-6 in fp32, inside the parity tolerance). Without a C++ compiler the compiled loop falls back
to ``F.linear`` with a warning. ``lmatlas.runtime.install`` swaps a model's ``nn.Linear`` modules
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

from . import native

_state = threading.local()
_compiled: dict[str, object] = {}
_broken: set[str] = set()
# Rows decoded at once up to which the engine packs the weights (a second copy): beyond, decoding is
# bound by compute rather than memory, and the copy gains less (MKL comes within 10-25%).
MAX_PACKED_ROWS = 64
# Smaller weights stay with F.linear (one row or several): they sit in cache, and a kernel call
# costs more than it saves.
MIN_COMPILED_ELEMENTS = 1 << 18


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
    ``F.linear`` unchanged.
    """

    _packed: torch.Tensor | None = None
    _packed_version: tuple[int, int] = (0, -1)
    _blocked: torch.Tensor | None = None
    _blocked_version: tuple[int, int] = (0, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if x.device.type != "cpu" or (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad)):
            return F.linear(x, w, self.bias)
        k = x.shape[-1]
        rows = x.numel() // k if k else 0
        dtype = w.dtype
        if rows == 1:
            if dtype == torch.float16 or w.numel() < MIN_COMPILED_ELEMENTS:
                return F.linear(x, w, self.bias)  # ATen's fp16 GEMV is at the bandwidth bound
            b = self.bias
            fn = _compiled_gemv(b is not None)
            if fn is not None:
                # A plain tensor (not a Parameter) and a fresh row keep one compiled kernel
                # for every shape: no guard on parameter shapes or storage offsets.
                row = x.reshape(1, k)
                if row.storage_offset() or not row.is_contiguous():
                    row = row.clone()
                args = (w.detach(), row) + (() if b is None else (b.detach(),))
                try:
                    y = fn(*args)
                except Exception as e:  # no C++ compiler, an unsupported platform...
                    _disable(e)
                else:
                    return y.reshape(*x.shape[:-1], w.shape[0])
            return F.linear(x, w, self.bias)
        if x.dtype == torch.float32 and self._use_blocked(rows):
            blocked = self._block()
            y = native.linear_rows(x.reshape(rows, k), blocked, self.bias, w.shape[0])
            return y.reshape(*x.shape[:-1], w.shape[0])
        if self._use_packed(rows):
            packed = self._pack(rows)
            if packed is not None:
                x2, b = x.reshape(rows, k), self.bias
                if dtype == torch.float16:
                    # oneDNN has no float16 GEMM without AVX512-FP16: float16 widens exactly to
                    # float32, so compute there (ATen's own float16 GEMM is slow beyond one row).
                    x2, b = x2.float(), None if b is None else b.float()
                # The overload itself: resolving it from the packet costs a few µs per call.
                y = torch.ops.mkldnn._linear_pointwise.default(x2, packed, b, "none", [], "")
                return y.to(dtype).reshape(*x.shape[:-1], w.shape[0])
        return F.linear(x, w, self.bias)

    def _blocked_decoding(self) -> bool:
        """Whether the rows being decoded take the C kernel (then no oneDNN copy is made)."""
        return (
            self.weight.dtype == torch.float32
            and self.weight.numel() >= MIN_COMPILED_ELEMENTS
            and 1 < _rows() <= native.MAX_LINEAR_ROWS
            and native.library() is not None
        )

    def _use_blocked(self, rows: int) -> bool:
        return rows <= native.MAX_LINEAR_ROWS and self._blocked_decoding()

    def _use_packed(self, rows: int) -> bool:
        if self.weight.numel() < MIN_COMPILED_ELEMENTS:
            return False  # small weights stay in cache, where a oneDNN call costs more than it saves
        if self._packed is not None and self._packed_version == weight_version(self.weight):
            return True
        # With the C kernel decoding, a prompt (more rows) takes F.linear rather than a second
        # packed copy of the weights.
        return 1 < _rows() <= MAX_PACKED_ROWS and not self._blocked_decoding()

    def _block(self) -> torch.Tensor:
        if self._blocked is None or self._blocked_version != weight_version(self.weight):
            with torch.no_grad():
                self._blocked = native.block_weight(self.weight.detach())
            self._blocked_version = weight_version(self.weight)
        return self._blocked

    def _pack(self, rows: int) -> torch.Tensor | None:
        if self._packed is None or self._packed_version != weight_version(self.weight):
            if not torch.backends.mkldnn.is_available():
                return None
            try:
                w = self.weight.detach()
                if w.dtype == torch.float16:
                    w = w.float()
                with torch.no_grad():
                    self._packed = torch.ops.mkldnn._reorder_linear_weight(w, max(_rows(), 2))
            except RuntimeError:
                return None
            self._packed_version = weight_version(self.weight)
        return self._packed

    def release(self) -> None:
        """Drop the packed copies (they are made again when needed)."""
        self._packed = None
        self._blocked = None


__all__ = ["CpuLinear", "MAX_PACKED_ROWS", "decode_rows", "weight_version"]
