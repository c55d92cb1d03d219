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
different types of Q8_0, Q4_0 and Q5_0 is kept as Q8_0 blocks of the same weights; one of other
mixed types, as runs of rows each in its own type (``MixedQuantizedLinear``). Anything else
(another type, rows moved across many runs) is dequantized to float32, as without the runtime.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .checkpoint import StoredBlocks
from .errors import LmatlasError
from .runtime.quant_formats import BLOCK, Q4_0, Q5_0, Q8_0, QuantType, as_q8_0, quant_type
from .runtime.quantized import MixedQuantizedLinear, QuantizedLinear

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


# Runs of rows of different types up to which a fused projection is kept in parts (a Llama
# q | k | v gives two or three; BLOOM's per-head grouping would give many, and stays float).
MAX_PARTS = 3

Kept = tuple[QuantType, torch.Tensor] | list[tuple[QuantType, torch.Tensor]]


def kept_blocks(parts: list[StoredBlocks | None], derive, shape: tuple[int, ...]) -> Kept | None:
    """The blocks of a (rows, columns) ``shape`` parameter made from the stored ``parts``
    (concatenated, or rearranged by ``derive``), if every move only reorders whole rows; None
    otherwise. Parts of one format give (kind, blocks). Parts in different symmetric types of
    blocks of 32 (Q8_0, Q4_0, Q5_0: a Q4_K_M file's attention) are all made Q8_0 blocks of the
    same weights (``as_q8_0``). Other mixed formats (q and k in Q4_K, v in Q6_K) give a list of
    (kind, blocks), one per run of output rows of one format, for ``MixedQuantizedLinear``. The
    moves are found by running them on a small probe."""
    if any(p is None for p in parts) or len(shape) != 2:
        return None
    kinds = {p.kind for p in parts}
    if len(kinds) > 1 and kinds <= {Q8_0, Q4_0, Q5_0}:
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
    if len({p.kind for p in parts}) == 1:
        data = parts[0].data if len(parts) == 1 else torch.cat([p.data for p in parts], dim=0)
        return parts[0].kind, data[rows].contiguous()
    # Which part each output row comes from, then runs of output rows of one format.
    starts = torch.tensor([0] + [p.shape[0] for p in parts]).cumsum(0)
    part_of = torch.searchsorted(starts[1:], rows, right=True)
    runs: list[tuple[QuantType, torch.Tensor]] = []
    begin = 0
    for end in [*(torch.nonzero(part_of[1:] != part_of[:-1]).flatten() + 1).tolist(), len(rows)]:
        k = int(part_of[begin])
        blocks = parts[k].data[rows[begin:end] - starts[k]]
        if runs and runs[-1][0] is parts[k].kind:  # q and k of one format: one run
            blocks = torch.cat([runs.pop()[1], blocks])
        runs.append((parts[k].kind, blocks.contiguous()))
        begin = end
    return runs if len(runs) <= MAX_PARTS else None


def put(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def install_blocks(model: nn.Module, found: dict[str, Kept]) -> None:
    """Swap each named linear layer for a ``QuantizedLinear`` over its kept blocks, or a
    ``MixedQuantizedLinear`` over its runs of rows (the bias, still to be loaded, moves with it)."""
    for name, kept in found.items():
        linear = model.get_submodule(name)
        if isinstance(kept, list):
            put(model, name, MixedQuantizedLinear(linear.in_features, kept, linear.bias))
        else:
            kind, blocks = kept
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
    parts = {id(p) for m in model.modules() if isinstance(m, MixedQuantizedLinear) for p in m.parts}
    return [
        (f"{name}.weight", m.dequantized())
        for name, m in model.named_modules()
        if isinstance(m, (QuantizedLinear, MixedQuantizedLinear)) and not (tied and name.endswith("head.decoder"))
        and id(m) not in parts  # a part: its layer stands for it
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
