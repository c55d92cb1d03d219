"""Quantized matrices in a loaded model: a GGUF file's blocks kept as they are stored, or float
weights quantized on loading (``lmatlas.load(..., quantize=...)``), into
``runtime.QuantizedLinear`` modules; the rest of the model stays float.

Which matrices, as llama.cpp's converter and quantizer choose them:

- the linear layers of the backbone (attention, MLP, an encoder-decoder's both stacks) whose
  input width is a whole number of blocks of 32 (llama.cpp too keeps other rows in float);
  a mixture-of-experts' router stays float32 (its few rows pick the experts; llama.cpp keeps
  ``ffn_gate_inp`` in F32);
- the language-model head: in the type asked for Q8_0, in Q8_0 for Q4_0 and Q4_1 (llama.cpp's
  quantizer makes the output matrix Q6_K, or Q8_0 where its rows are not whole blocks of 256;
  lmatlas has no Q6_K). Tied to the token embeddings, the head gets its own blocks: the
  embeddings, like the norms, the position tables and the classifiers, stay float.

A GGUF file's matrix is kept as stored when its type is one the runtime multiplies (Q8_0, Q4_0,
Q4_1, and Q5_0, Q5_1 and the K-quants Q4_K, Q5_K and Q6_K of most files, which lmatlas runs but
does not make) and the moves between the file's layout and lmatlas' only reorder whole rows (llama.cpp's
q/k row order, BLOOM's per-head q/k/v, GPT-2's transposed projections stored transposed back):
the bytes of each row are then moved with it. A fused projection whose parts are stored in
different types of Q8_0, Q4_0 and Q5_0 is kept as Q8_0 blocks of the same weights. Anything else
(another type, other mixed types) is dequantized to float32, as without the runtime.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .checkpoint import StoredBlocks
from .errors import LmatlasError
from .runtime.quant_formats import BLOCK, Q4_0, Q5_0, Q8_0, QuantType, as_q8_0, quant_type
from .runtime.quantized import QuantizedLinear

# Linear layers that stay float whatever the type (see the module's docstring).
_FLOAT_NAMES = ("router",)


def linear_holders(model: nn.Module) -> dict[int, tuple[list[str], bool]]:
    """id(weight) -> (the linear layers using it, whether nothing else uses it): a tied
    language-model head shares the token embeddings' weight, which stays float for them."""
    linears: dict[int, list[str]] = {}
    others: set[int] = set()
    for name, m in model.named_modules(remove_duplicate=False):
        w = None if isinstance(m, QuantizedLinear) else getattr(m, "weight", None)
        if isinstance(m, nn.Linear) and _quantizable(name, m):
            linears.setdefault(id(w), []).append(name)
        elif isinstance(w, torch.Tensor):
            others.add(id(w))
    return {key: (names, key not in others) for key, names in linears.items()}


def _quantizable(name: str, m: nn.Linear) -> bool:
    lm_head = name.endswith("head.decoder")
    inside = name.startswith("backbone.") and not name.endswith(_FLOAT_NAMES)
    return (lm_head or inside) and m.in_features % BLOCK == 0


def _probe(rows: int, offset: int) -> torch.Tensor:
    """(rows, 3) values that say where each element came from: row * 3 + column."""
    return (torch.arange(rows) + offset)[:, None] * 3 + torch.arange(3)


def kept_blocks(parts: list[StoredBlocks | None], derive, shape: tuple[int, ...]) -> tuple[QuantType, torch.Tensor] | None:
    """The blocks of a (rows, columns) ``shape`` parameter made from the stored ``parts``
    (concatenated, or rearranged by ``derive``), if they share one format and every move only
    reorders whole rows; None otherwise. Parts in different symmetric types of blocks of 32
    (Q8_0, Q4_0, Q5_0: a Q4_K_M file's attention) are all made Q8_0 blocks of the same weights
    (``as_q8_0``). The moves are found by running them on a small probe."""
    if any(p is None for p in parts) or len(shape) != 2:
        return None
    kinds = {p.kind for p in parts}
    if len(kinds) > 1:
        if not kinds <= {Q8_0, Q4_0, Q5_0}:
            return None
        parts = [dataclasses.replace(p, data=as_q8_0(p.data, p.kind), kind=Q8_0) for p in parts]
    if any(len(p.shape) != 2 or p.shape[1] != shape[1] for p in parts):
        return None
    probes, offset = [], 0
    for p in parts:
        probe = _probe(p.shape[0], offset)
        offset += p.shape[0]
        probes.append(probe if p.rearrange is None else p.rearrange(probe))
    try:
        moved = derive(*probes) if derive is not None else torch.cat(probes, dim=0)
    except (RuntimeError, IndexError, ValueError):
        return None
    if moved.ndim != 2 or tuple(moved.shape) != (shape[0], 3):
        return None
    rows = moved[:, 0] // 3
    if not torch.equal(moved, rows[:, None] * 3 + torch.arange(3)):
        return None
    data = parts[0].data if len(parts) == 1 else torch.cat([p.data for p in parts], dim=0)
    return parts[0].kind, data[rows].contiguous()


def put(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def install_blocks(model: nn.Module, found: dict[str, tuple[QuantType, torch.Tensor]]) -> None:
    """Swap each named linear layer for a ``QuantizedLinear`` over its kept blocks (the bias,
    still to be loaded, moves with it)."""
    for name, (kind, blocks) in found.items():
        linear = model.get_submodule(name)
        put(model, name, QuantizedLinear(linear.in_features, linear.out_features, kind, blocks, linear.bias))


def quantize_model(model: nn.Module, kind: str | QuantType) -> nn.Module:
    """Quantize ``model``'s float matrices in place (those of the module's docstring) to
    ``kind`` (q8_0, q4_0 or q4_1); matrices already quantized stay as they are."""
    kind = quant_type(kind)
    with torch.no_grad():
        for name, m in list(model.named_modules(remove_duplicate=False)):
            if isinstance(m, nn.Linear) and _quantizable(name, m):
                head_kind = Q8_0 if name.endswith("head.decoder") else kind
                put(model, name, QuantizedLinear.of(m, head_kind, m.weight.detach().float()))
    return model


def dequantized_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, float32 weight) of each quantized linear layer, for saving: the float model the
    blocks stand for. A head tied to the token embeddings is left out (the embeddings stand for it)."""
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    return [
        (f"{name}.weight", m.dequantized())
        for name, m in model.named_modules()
        if isinstance(m, QuantizedLinear) and not (tied and name.endswith("head.decoder"))
    ]


def quantized_kinds(model: nn.Module) -> list[str]:
    """The block formats of the model's quantized matrices (none for a float model)."""
    return sorted({m.kind.name for m in model.modules() if isinstance(m, QuantizedLinear)})


def refuse_quantized(model: nn.Module, what: str) -> None:
    """One sentence where ``what`` (training...) needs float matrices and the model has blocks."""
    kinds = quantized_kinds(model)
    if kinds:
        raise LmatlasError(
            f"{what} needs float weights, and the model's matrices are quantized ({', '.join(kinds)}); "
            "load it with dequantize=True, or without quantize"
        )


__all__ = ["dequantized_weights", "install_blocks", "kept_blocks", "linear_holders", "quantize_model", "quantized_kinds", "refuse_quantized"]
