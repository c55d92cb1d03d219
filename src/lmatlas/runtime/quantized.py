"""A linear layer whose weight stays quantized, in llama.cpp's block formats (``quant_formats``).

``QuantizedLinear`` holds the blocks as they are stored (a uint8 buffer, the bytes of a GGUF
tensor) and the bias, if any, as a float parameter. Its two ways to compute ``x @ w.T + b``:

- PyTorch's: the weight dequantized (as ``gguf.quants.dequantize`` gives it, to the bit), a
  tile of output rows at a time so that no float copy of a large matrix is kept, then
  ``F.linear``. The numbers are those of the float model the blocks stand for. This is the path of
  a model that ``lmatlas.load`` returns (plain PyTorch; gradients flow to the input, the blocks
  are not trained), of prompts longer than ``MAX_KERNEL_ROWS`` and of other devices;
- the C kernels (``quant_kernels.quant_linear``), once the runtime is installed for a decode
  (``runtime.install`` sets ``kernels``): integer dot products of the blocks with the activations
  quantized to int8 blocks, as llama.cpp runs them, reading 1.06 (Q8_0), 0.56 (Q4_0, Q4_K), 0.63
  (Q4_1), 0.69 (Q5_0, Q5_K), 0.75 (Q5_1) or 0.82 (Q6_K) bytes a weight instead of float32's 4. They
  differ from PyTorch's path by the activations' rounding: for each output, at most sum over
  blocks of max |x| / 254 times the sum of |w| over the block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import calibrate, quant_kernels
from .quant_formats import QuantType, dequantize, quant_type, quantize

# A decoding step's rows (up to 8, a group of the kernels) always take the C kernels: the other
# way would dequantize the whole matrix for a few rows. For a prompt's rows, which share each pass
# over the weights in groups of 8, whether the kernels beat dequantizing the weights for F.linear
# depends on the CPU and the matrix: it is measured (``calibrate``, kind "quant-rows") for the
# power of two at or above the row count, up to MAX_KERNEL_ROWS (beyond, F.linear on the
# dequantized tiles: the kernels' time grows with the rows, a GEMM's much less).
DECODE_ROWS = 8
MAX_KERNEL_ROWS = 256
PROMPT_PATHS = ("dequantize", "kernel")  # the candidates, the fallback first
# Output rows dequantized at a time on PyTorch's path (a few MB of float32).
TILE_ELEMENTS = 1 << 20


class QuantizedLinear(nn.Module):
    """A linear layer over a (out_features, in_features) weight kept in blocks of ``kind``
    (``blocks``: (out_features, row bytes) uint8), with an optional float ``bias``."""

    kernels: str | bool = False  # runtime.install sets the kernels' path: calls of a few rows take them
    _paths: dict | None = None  # (rows bucket, threads, kernel path) -> "kernel" or "dequantize"

    def __init__(self, in_features: int, out_features: int, kind: str | QuantType, blocks: torch.Tensor,
                 bias: torch.Tensor | None = None):  # fmt: skip
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.kind = quant_type(kind)
        if in_features % self.kind.block:
            raise ValueError(f"a {self.kind.name} matrix's rows are whole blocks of {self.kind.block} weights, not {in_features}")
        if blocks.dtype != torch.uint8 or tuple(blocks.shape) != (out_features, self.kind.row_bytes(in_features)):
            raise ValueError(f"blocks of shape {tuple(blocks.shape)} do not hold a {out_features} x {in_features} {self.kind.name} matrix")
        self.register_buffer("blocks", blocks)
        self.bias = bias if bias is None or isinstance(bias, nn.Parameter) else nn.Parameter(bias)

    @classmethod
    def of(cls, linear: nn.Linear, kind: str | QuantType, weight: torch.Tensor | None = None) -> "QuantizedLinear":
        """``linear`` with its weight (or ``weight``: a tied one) quantized to ``kind``."""
        w = linear.weight if weight is None else weight
        return cls(linear.in_features, linear.out_features, kind, quantize(w, kind), linear.bias)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight the blocks hold, as a float tensor (a copy)."""
        return dequantize(self.blocks, self.kind, dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The weight the blocks hold, dequantized to float32: a fresh copy at each read, to
        look at (the layer is not changed through it, and no weight can be assigned)."""
        return self.dequantized()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        path = self.kernels  # a path's name once installed (a decode calls this at every layer of every step)
        if path:
            k = x.shape[-1]
            rows = x.numel() // k if k else 0
            if 0 < rows <= MAX_KERNEL_ROWS and self._kernel_applies(x) and (
                rows <= DECODE_ROWS or self._prompt_path(rows, path) == "kernel"
            ):
                b = self.bias
                b = None if b is None else b.detach().float()
                y = quant_kernels.quant_linear(x.reshape(rows, k).float(), self.blocks, self.kind.id, b, self.out_features, path)
                return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return self.reference(x)

    def _prompt_path(self, rows: int, path: str) -> str:
        """For a prompt's ``rows``: the C kernels or the dequantized weights, whichever this CPU
        runs faster for the matrix and the next power of two of rows (measured once)."""
        bucket = 1 << (rows - 1).bit_length()
        memo = (bucket, torch.get_num_threads(), path)
        if self._paths is None:
            self._paths = {}
        choice = self._paths.get(memo)
        if choice is None:
            shape = f"{self.kind.name}/{self.out_features}x{self.in_features}/rows={bucket}/{path}"
            choice = calibrate.choose("quant-rows", shape, lambda: _prompt_candidates(self, bucket, path), PROMPT_PATHS)
            self._paths[memo] = choice
        return choice

    def _kernel_applies(self, x: torch.Tensor) -> bool:
        if torch.is_grad_enabled() and (x.requires_grad or (self.bias is not None and self.bias.requires_grad)):
            return False
        return x.device.type == "cpu" and self.blocks.device.type == "cpu"

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """PyTorch's path: the weight dequantized a tile of output rows at a time, then F.linear."""
        step = max(1, TILE_ELEMENTS // max(1, self.in_features))
        if step >= self.out_features:
            return F.linear(x, dequantize(self.blocks, self.kind, x.dtype), self.bias)
        tiles = []
        for start in range(0, self.out_features, step):
            w = dequantize(self.blocks[start : start + step], self.kind, x.dtype)
            b = None if self.bias is None else self.bias[start : start + step]
            tiles.append(F.linear(x, w, b))
        return torch.cat(tiles, dim=-1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind.name}, bias={self.bias is not None}"


class MixedQuantizedLinear(nn.Module):
    """A linear layer whose output rows are kept in runs of different block types: a fused
    projection whose parts a file stores in different types (llama.cpp's Q4_K_M gives some layers'
    v Q6_K and their q and k Q4_K). Each run is a ``QuantizedLinear`` (``parts``, in output
    order, without bias), computed in turn and concatenated, then the float ``bias`` added. A
    decoding step takes each part's kernels (in the layer step too: ``layer_step``)."""

    def __init__(self, in_features: int, runs: list[tuple[QuantType, torch.Tensor]], bias: torch.Tensor | None = None):
        super().__init__()
        self.parts = nn.ModuleList(QuantizedLinear(in_features, blocks.shape[0], kind, blocks) for kind, blocks in runs)
        self.in_features, self.out_features = in_features, sum(p.out_features for p in self.parts)
        self.bias = bias if bias is None or isinstance(bias, nn.Parameter) else nn.Parameter(bias)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight the parts hold, as a float tensor (a copy)."""
        return torch.cat([p.dequantized(dtype) for p in self.parts])

    @property
    def weight(self) -> torch.Tensor:
        """The weight, dequantized to float32: a fresh copy at each read (see ``QuantizedLinear``)."""
        return self.dequantized()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([p(x) for p in self.parts], dim=-1)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        rows = ", ".join(f"{p.out_features} {p.kind.name}" for p in self.parts)
        return f"in_features={self.in_features}, out_features={self.out_features}, rows={rows}, bias={self.bias is not None}"


def gated_step(x: torch.Tensor, gate: nn.Module, up: nn.Module, act) -> torch.Tensor | None:
    """``act(gate(x)) * up(x)`` for a decoding step's rows, where both are quantized layers of one
    kind and shape, without bias, installed, and ``act`` is SiLU (SwiGLU: Llama, Mistral, Qwen,
    SmolLM): one C call that quantizes x once and reads each pair of weight rows together. None
    where it does not apply (the caller then runs the two layers)."""
    path = getattr(gate, "kernels", False)
    if not (path and act is F.silu and isinstance(gate, QuantizedLinear) and isinstance(up, QuantizedLinear)
            and up.kernels == path and gate.kind is up.kind and gate.bias is None and up.bias is None
            and gate.out_features == up.out_features and gate.in_features == up.in_features):
        return None
    k = x.shape[-1]
    rows = x.numel() // k if k else 0
    if not (0 < rows <= DECODE_ROWS and x.dtype == torch.float32 and gate._kernel_applies(x)):
        return None
    y = quant_kernels.quant_gated(x.reshape(rows, k), gate.blocks, up.blocks, gate.kind.id, gate.out_features, path)
    return y.reshape(*x.shape[:-1], gate.out_features)


def _prompt_candidates(layer: QuantizedLinear, rows: int, path: str):
    """Copies of ``layer``'s blocks (their first rows where the matrix is large: enough rows and
    copies to stream from memory, ``calibrate.test_shape``, flushed from the caches before each
    timed pass) and ``rows`` rows of input, through either path."""
    row_bytes = layer.kind.row_bytes(layer.in_features)
    out, copies = calibrate.test_shape(layer.out_features, row_bytes)
    mats = [QuantizedLinear(layer.in_features, out, layer.kind, layer.blocks[:out].clone()) for _ in range(copies)]
    x = torch.empty(rows, layer.in_features).uniform_(-1, 1)
    return {
        "dequantize": lambda i: mats[i].reference(x),
        "kernel": lambda i: quant_kernels.quant_linear(x, mats[i].blocks, layer.kind.id, None, out, path),
    }, copies, [m.blocks for m in mats]


__all__ = ["DECODE_ROWS", "MAX_KERNEL_ROWS", "PROMPT_PATHS", "MixedQuantizedLinear", "QuantizedLinear", "gated_step"]
