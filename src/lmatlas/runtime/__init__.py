"""The CPU runtime: compiled kernels for a decode, the thread policy, and the one switch.

The models (``lmatlas.blocks``, ``lmatlas.attention``) are plain PyTorch that a reader can follow and autograd can
train. For a decode they offer hooks, empty by default, which ``install`` fills:

- ``nn.Linear`` modules become ``linear.CpuLinear`` (same parameters and state dict);
- ``quantized.QuantizedLinear`` modules (weights kept in llama.cpp's blocks) take the C kernels
  for a step's few rows or a short prompt (``quant_kernels.quant_linear``);
- ``SelfAttention.decode_step``: one new query per row over the key/value cache
  (``native.decode_step_attention``);
- ``CrossAttention.attend_few``: a decoding step's few query rows over an encoder-decoder's
  source (``native.few_queries_attention``);
- ``Layer.add_norm``: a post-norm layer's residual sum and LayerNorm (``native.add_layer_norm``);
- ``MLP.gated_step``: a SwiGLU MLP's two quantized products on one quantization of x
  (``quantized.gated_step``);
- ``Layer.step``: a pre-norm decoder layer's whole step for one token in one C call, where its
  products take C kernels anyway (``layer_step.step``).

Each hook returns None where it does not apply (other dtypes, gradients, too many rows), and
the block then takes PyTorch's path. The generation engine installs the runtime at the start of
a decode (``decoding``); ``lmatlas.load`` does not, so an encoder (embeddings, search) never
builds or calls the C library. The installation stays with the model, with the weight copies
its kernels made, until ``uninstall``. ``LMATLAS_KERNELS=0`` (``switch.enabled``) keeps every
kernel off.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

from . import layer_step, native, quant_kernels
from .linear import MAX_PACKED_ROWS, CpuLinear, decode_rows
from .quantized import MixedQuantizedLinear, QuantizedLinear, gated_step
from .switch import enabled
from .threads import StepThreads

# The hooks ``install`` fills: attribute -> kernel, for each kind of block.
_SELF_ATTENTION_HOOKS = {"decode_step": native.decode_step_attention}
_CROSS_ATTENTION_HOOKS = {"attend_few": native.few_queries_attention}
_LAYER_HOOKS = {"add_norm": native.add_layer_norm, "step": layer_step.step}
_MLP_HOOKS = {"gated_step": gated_step}


def _hooks(module: nn.Module) -> dict:
    # The runtime knows the blocks; they do not know it.
    from ..attention import CrossAttention, SelfAttention
    from ..blocks import MLP, Layer

    if isinstance(module, SelfAttention):
        return _SELF_ATTENTION_HOOKS
    if isinstance(module, CrossAttention):
        return _CROSS_ATTENTION_HOOKS
    if isinstance(module, Layer):
        return _LAYER_HOOKS
    if isinstance(module, MLP):
        return _MLP_HOOKS
    return {}


def install(model: nn.Module) -> bool:
    """Give ``model`` the runtime's kernels for decoding on the CPU; False where they are switched
    off (``model`` is then plain PyTorch, even if an earlier decode installed them)."""
    if not enabled():
        uninstall(model)
        return False
    path = None
    for m in model.modules():
        if type(m) is nn.Linear:
            m.__class__ = CpuLinear
        elif type(m) is CpuLinear:
            m._bound = None  # bound again at its first row: LMATLAS_GEMV_PATH may change between decodes
        elif isinstance(m, QuantizedLinear):
            if path is None:  # asked once per decode: LMATLAS_QUANT_PATH may change between decodes
                path = quant_kernels.quant_path() or ""
            m.kernels = path or False
        for name, kernel in _hooks(m).items():
            setattr(m, name, kernel)
        layer_step.forget(m)  # planned again at the first step: weights or kernel choices may have changed
    return True


def uninstall(model: nn.Module) -> nn.Module:
    """Return ``model`` to plain PyTorch, dropping the weight copies the kernels made."""
    for m in model.modules():
        if type(m) is CpuLinear:
            m.release()
            m.__class__ = nn.Linear
        elif isinstance(m, QuantizedLinear):
            m.__dict__.pop("kernels", None)
        for name in _hooks(m):
            m.__dict__.pop(name, None)
        layer_step.forget(m)
    return model


def installed(model: nn.Module) -> bool:
    return any(isinstance(m, CpuLinear) or getattr(m, "kernels", False) for m in model.modules())


def release(model: nn.Module) -> None:
    """Free the weight copies the kernels made (they are made again when needed)."""
    for m in model.modules():
        if isinstance(m, CpuLinear):
            m.release()


@contextlib.contextmanager
def decoding(model: nn.Module, rows: int) -> Iterator[None]:
    """A decode of ``rows`` sequences at a time: the runtime installed on ``model``, and the
    linear layers told how many rows to expect (see ``linear.decode_rows``)."""
    install(model)
    with decode_rows(rows):
        yield


__all__ = [
    "MAX_PACKED_ROWS", "CpuLinear", "MixedQuantizedLinear", "QuantizedLinear", "StepThreads", "decode_rows", "decoding", "enabled", "install", "installed",
    "release", "uninstall",
]  # fmt: skip
