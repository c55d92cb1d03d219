"""llama.cpp's (ggml's) block formats for quantized matrices, in PyTorch: Q8_0, Q4_0 and Q4_1
(and Q5_0, Q5_1, Q4_K, Q5_K, Q6_K as GGUF files store them: run and dequantized, never made here).

A matrix of (rows, columns) is stored row by row, each row as columns / 32 blocks of 32
consecutive weights, each block a float16 scale (and a float16 minimum for Q4_1) and the
weights' integers (layouts: ``csrc/quant.c``). ``quantize`` gives the very bytes that the
``gguf`` package's ``gguf.quants.quantize`` gives (the same float32 operations in the same order,
so a model quantized here and a GGUF file written by lmatlas or llama.cpp's converter hold the
same blocks), and ``dequantize`` the very floats of ``gguf.quants.dequantize``. ``quantize``
runs in C where the runtime's library is built (``csrc/quant.c``: one pass over the matrix,
multi-threaded), else in PyTorch; both give those bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LmatlasError
from . import quant_kernels

BLOCK = 32


@dataclass(frozen=True)
class QuantType:
    name: str  # as lmatlas' options spell it
    id: int  # ggml's type id, as GGUF files store it
    block_bytes: int
    block: int = BLOCK  # weights per block

    def row_bytes(self, columns: int) -> int:
        return columns // self.block * self.block_bytes


Q8_0 = QuantType("q8_0", 8, 34)
Q4_0 = QuantType("q4_0", 2, 18)
Q4_1 = QuantType("q4_1", 3, 20)
TYPES = {t.name: t for t in (Q8_0, Q4_0, Q4_1)}  # the types lmatlas quantizes to
# The K-quants of most GGUF files (Q4_K_M, Q5_K_M), which the runtime runs as stored (super-blocks of 256; layouts:
# csrc/quant_k.c) but lmatlas does not make: their blocks come from a file.
Q4_K = QuantType("q4_k", 12, 144, 256)
Q5_K = QuantType("q5_k", 13, 176, 256)
Q6_K = QuantType("q6_k", 14, 210, 256)
# Q5_0 and Q5_1, which llama.cpp's quantizer puts where a Q4_K_M or Q4_K_S file's rows are not
# whole super-blocks of 256 (a width of 576 or 896): blocks of 32 with a fifth bit per weight.
Q5_0 = QuantType("q5_0", 6, 22)
Q5_1 = QuantType("q5_1", 7, 24)
BY_ID = {t.id: t for t in (*TYPES.values(), Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)}


def quant_type(name: str | QuantType, argument: str = "quantize") -> QuantType:
    """The type ``name`` names (q8_0, q4_0 or q4_1, any case); one sentence for anything else."""
    if isinstance(name, QuantType):
        return name
    found = TYPES.get(str(name).lower())
    if found is None:
        raise LmatlasError(f"{argument}={name!r} is not a type lmatlas quantizes to; use one of {', '.join(TYPES)}")
    return found


def _blocks(w: torch.Tensor) -> torch.Tensor:
    if w.ndim != 2 or w.shape[1] % BLOCK:
        raise LmatlasError(f"a matrix of shape {tuple(w.shape)} cannot be quantized: its rows are not whole blocks of 32")
    return w.detach().to(torch.float32).reshape(-1, BLOCK)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """1 / d, and 0 where d is 0 (an all-zero block)."""
    return torch.where(d == 0, torch.zeros_like(d), torch.ones_like(d) / d)


def _half_bytes(v: torch.Tensor) -> torch.Tensor:
    """(n, 1) float32 -> (n, 2) bytes of its float16, little-endian as GGUF stores it."""
    return v.to(torch.float16).view(torch.uint8)


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(n, 32) values 0..15 -> (n, 16) bytes: weight i in the low nibble of byte i, weight
    i + 16 in its high nibble."""
    q = q.to(torch.uint8)
    return q[:, :16] | (q[:, 16:] << 4)


def _unpack_nibbles(qs: torch.Tensor) -> torch.Tensor:
    return torch.cat([qs & 15, qs >> 4], dim=1)


def quantize(w: torch.Tensor, kind: str | QuantType) -> torch.Tensor:
    """A (rows, columns) float matrix as (rows, row bytes) uint8 blocks of ``kind``."""
    kind = _made_here(kind)
    b = _blocks(w)
    fast = quant_kernels.quant_quantize(b.reshape(w.shape), kind.id, kind.row_bytes(w.shape[1]))
    return fast if fast is not None else quantize_in_torch(w, kind)


def _made_here(kind: str | QuantType) -> QuantType:
    kind = quant_type(kind)
    if kind.name not in TYPES:
        raise LmatlasError(f"{kind.name} matrices run as a file stores them; lmatlas quantizes to {', '.join(TYPES)}")
    return kind


def quantize_in_torch(w: torch.Tensor, kind: str | QuantType) -> torch.Tensor:
    """``quantize`` in PyTorch's operators (where the C library is not built)."""
    kind = _made_here(kind)
    rows = w.shape[0]
    b = _blocks(w)
    if kind is Q8_0:
        d = b.abs().amax(dim=1, keepdim=True) / 127
        v = b * _inverse(d)
        # roundf: half away from zero, computed exactly as gguf's np_roundf does
        a = v.abs()
        whole = a.floor()
        q = torch.sign(v) * (whole + (2 * (a - whole)).floor())
        out = torch.cat([_half_bytes(d), q.to(torch.int8).view(torch.uint8)], dim=1)
    elif kind is Q4_0:
        # The scale's sign is the largest magnitude's (the first, on a tie): it maps to -8.
        biggest = b.gather(1, b.abs().argmax(dim=1, keepdim=True))
        d = biggest / -8
        q = (b * _inverse(d) + 8.5).trunc().clamp(0, 15)
        out = torch.cat([_half_bytes(d), _pack_nibbles(q)], dim=1)
    else:
        low, high = b.amin(dim=1, keepdim=True), b.amax(dim=1, keepdim=True)
        d = (high - low) / 15
        q = ((b - low) * _inverse(d) + 0.5).trunc().clamp(0, 15)
        out = torch.cat([_half_bytes(d), _half_bytes(low), _pack_nibbles(q)], dim=1)
    return out.reshape(rows, -1)


def _half(raw: torch.Tensor) -> torch.Tensor:
    """(n, 2) bytes -> (n, 1) float32 of the float16 they hold."""
    return raw.contiguous().view(torch.float16).to(torch.float32)


def dequantize(blocks: torch.Tensor, kind: str | QuantType, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(rows, row bytes) uint8 blocks of ``kind`` back to the (rows, columns) matrix they hold
    (in C where the library is built, as ``quantize``)."""
    kind = quant_type(kind)
    rows = blocks.shape[0]
    if kind.block == BLOCK:
        fast = quant_kernels.quant_dequantize(blocks, kind.id, blocks.shape[1] // kind.block_bytes * BLOCK)
        if fast is not None:
            return fast.to(dtype)
        if kind.name in TYPES:
            return dequantize_in_torch(blocks, kind, dtype)
    # A K-quant, or Q5 without the library: the gguf package's own dequantization.
    import gguf

    values = gguf.quants.dequantize(blocks.numpy(), gguf.GGMLQuantizationType(kind.id))
    return torch.from_numpy(values.astype("float32").reshape(rows, -1)).to(dtype)


def as_q8_0(blocks: torch.Tensor, kind: str | QuantType) -> torch.Tensor:
    """(rows, row bytes) blocks of a symmetric type of blocks of 32 (Q8_0, Q4_0, Q5_0) as Q8_0
    blocks of the very same weights: the scale kept, each integer (q - 8, or v - 16) in a byte.
    A fused projection whose parts a file stores in different such types (llama.cpp's Q4_K_M
    mixes Q5_0 and Q8_0 in attention) is thus kept in blocks, one type, without rounding."""
    kind = quant_type(kind)
    if kind is Q8_0:
        return blocks
    raw = blocks.reshape(-1, kind.block_bytes)
    values = _unpack_nibbles(raw[:, -BLOCK // 2 :]).to(torch.int16)
    if kind is Q4_0:
        values -= 8
    elif kind is Q5_0:
        bits = raw[:, 2:6].to(torch.int64)
        word = bits[:, 0] | bits[:, 1] << 8 | bits[:, 2] << 16 | bits[:, 3] << 24
        values += ((word[:, None] >> torch.arange(BLOCK)) & 1).to(torch.int16) << 4
        values -= 16
    else:
        raise ValueError(f"{kind.name} blocks have a minimum: they are not Q8_0 blocks of the same weights")
    out = torch.cat([raw[:, :2], values.to(torch.int8).view(torch.uint8)], dim=1)
    return out.reshape(blocks.shape[0], -1)


def dequantize_in_torch(blocks: torch.Tensor, kind: str | QuantType, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``dequantize`` in PyTorch's operators (where the C library is not built), for the types
    lmatlas makes."""
    kind = _made_here(kind)
    rows = blocks.shape[0]
    raw = blocks.reshape(-1, kind.block_bytes)
    d = _half(raw[:, :2])
    if kind is Q8_0:
        w = raw[:, 2:].contiguous().view(torch.int8).to(torch.float32) * d
    elif kind is Q4_0:
        w = d * (_unpack_nibbles(raw[:, 2:]).to(torch.float32) - 8)
    else:
        # d * q is exact in float32 (a 4-bit times an 11-bit significand): one rounding, as numpy's
        w = d * _unpack_nibbles(raw[:, 4:]).to(torch.float32) + _half(raw[:, 2:4])
    return w.reshape(rows, -1).to(dtype)


__all__ = [
    "BLOCK", "BY_ID", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0", "TYPES", "QuantType", "as_q8_0",
    "dequantize", "dequantize_in_torch", "quant_type", "quantize", "quantize_in_torch",
]  # fmt: skip
