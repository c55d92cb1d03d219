"""A pre-norm decoder layer's decoding step for one token in one C call (``csrc/layer.c``).

At batch 1 a small model's step spends about as long in Python between its products as in them:
each layer runs a dozen modules and operators, each a few microseconds of interpreter and
dispatch, each starting cold after the weights streamed through the caches. ``Layer.step`` (the
hook ``install`` fills with ``step``) hands the whole layer to C instead, where it can: the plan
(``Plan``, pointers to the layer's parameters) is made once per layer and thread count, and a
step passes the hidden state, the cache and the rotation.

It applies where the layer is one the C code follows exactly, and declines (None: the modules
run) anywhere else:

- ``Layer`` with the pre-norm layout (GPT-2, Llama, Mistral, Qwen, SmolLM...), no cross-attention,
  norms both LayerNorm (with weights) or both RMSNorm, an MLP (gated or not) whose activation is
  GELU (erf or tanh), SiLU or ReLU;
- ``SelfAttention`` with rotate-half rotary embeddings or none, head width at most
  ``native.MAX_DIM``;
- every product one that would take a C kernel anyway: float32 or bfloat16 weights for which
  the one-row kernel was chosen (``linear.CpuLinear``; the choice is this CPU's, ``calibrate``),
  or, in a float32 model, weights kept quantized with the runtime's kernels
  (``quantized.QuantizedLinear``);
- one token, no gradients, no mask (batch 1 without padding; a mask or a position bias, ALiBi's,
  a sliding window's, declines), the hidden state, every parameter and the cache of one dtype
  (float32 or bfloat16), the cache with room for the token.

In float32 the numbers are the modules' up to rounding (the products' own summation orders, norm
statistics summed in double), within the parity tolerance. In bfloat16 the C step rounds where
the modules hold a bfloat16 tensor and computes in float32 between, as they do; a sum taken in
another order can still land one bfloat16 step away. ``tests/test_layer_step.py`` compares each
variant with the modules' path. ``LMATLAS_KERNELS=0`` keeps it off with the rest.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import nn

from . import linear, native, quant_kernels
from .quantized import MixedQuantizedLinear, QuantizedLinear

DENSE_WEIGHTS = -1
NORMS = {"layer": 0, "rms": 1}
# The C step for each dtype of the hidden state (every parameter and the cache of that dtype).
STEPS = {torch.float32: "layer_step", torch.bfloat16: "layer_step_bf16"}
ACT_GELU, ACT_GELU_TANH, ACT_SILU, ACT_RELU = 0, 1, 2, 3


class Product(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int64), ("w", ctypes.c_void_p), ("bias", ctypes.c_void_p),
                ("n", ctypes.c_int64), ("k", ctypes.c_int64)]  # fmt: skip


# No product (a layer without a gate; the q/k/v rows' further parts where there are none): read
# only, and copied where a plan takes it.
NO_PRODUCT = Product(DENSE_WEIGHTS, None, None, 0, 0)


class Plan(ctypes.Structure):
    """``struct layer_plan`` of ``csrc/layer.c``."""

    _fields_ = [
        ("norm", ctypes.c_int64),
        ("norm1_w", ctypes.c_void_p), ("norm1_b", ctypes.c_void_p),
        ("norm2_w", ctypes.c_void_p), ("norm2_b", ctypes.c_void_p),
        ("eps1", ctypes.c_double), ("eps2", ctypes.c_double),
        ("qkv", Product), ("out", Product), ("fc_in", Product), ("gate", Product), ("fc_out", Product),
        ("gated_kernel", ctypes.c_int64),
        ("act", ctypes.c_int64),
        ("heads", ctypes.c_int64), ("kv_heads", ctypes.c_int64), ("dim", ctypes.c_int64),
        ("hidden", ctypes.c_int64), ("inner", ctypes.c_int64),
        ("scale", ctypes.c_double),
        ("gemv_path", ctypes.c_int64), ("quant_path", ctypes.c_int64),
        ("qkv_rest", Product * 2),
    ]  # fmt: skip


def _dropped():
    return None


class _Bound:
    """A layer's plan and everything it was made from, checked before each call without going
    through the modules' attribute lookup (which would cost a step more than the check):

    - each tensor it points into, with the dict of its module that holds it (``_parameters`` or
      ``_buffers``), its address and shape; the tensor itself is kept, so that its memory cannot
      be freed and reused by another while the plan holds its address;
    - each submodule and setting it read (the attention, MLP, norms and linear layers in their
      parents' ``_modules``; scale, heads, activation, eps, training mode in their ``__dict__``),
      as the same object: a module replaced or a setting changed makes the plan again;
    - the modules' forward hooks, which the C step would skip: it declines while any is set.

    A model holding plans is still copied and pickled as before: a plan copies as None (it points
    into the original's memory) and is made again at the copy's next step."""

    __slots__ = ("plan", "slots", "fields", "hooks", "threads", "hidden", "dtype")

    def __init__(self, plan: Plan, slots: list[tuple[dict, str, torch.Tensor]], fields: list[tuple[dict, str]],
                 hooks: list[dict], threads: int, hidden: int, dtype: torch.dtype):  # fmt: skip
        self.plan, self.threads, self.hidden, self.dtype = plan, threads, hidden, dtype
        self.slots = [(holder, name, t, t.data_ptr(), t.shape) for holder, name, t in slots]
        self.fields = [(holder, name, holder.get(name)) for holder, name in fields]
        self.hooks = hooks

    def current(self) -> bool:
        for holder, name, t, ptr, shape in self.slots:
            if holder.get(name) is not t or t.data_ptr() != ptr or t.shape != shape:
                return False
        for holder, name, value in self.fields:
            if holder.get(name) is not value:
                return False
        return not any(self.hooks)

    def __reduce__(self):
        return _dropped, ()


def _slot(module: nn.Module, name: str) -> tuple[dict, str, torch.Tensor]:
    holder = module._parameters if name in module._parameters else module._buffers
    return holder, name, holder[name]


def _activation(act) -> int | None:
    from ..blocks import _gelu_tanh

    return {F.gelu: ACT_GELU, _gelu_tanh: ACT_GELU_TANH, F.silu: ACT_SILU, F.relu: ACT_RELU}.get(act)


def _norm(module: nn.Module, hidden: int) -> tuple[str, torch.Tensor | None, torch.Tensor | None, float] | None:
    from ..blocks import RMSNorm

    if type(module) is nn.LayerNorm and tuple(module.normalized_shape) == (hidden,) and module.weight is not None:
        w, b = module.weight, module.bias
        return "layer", w, b, float(module.eps)
    if type(module) is RMSNorm and module.weight.shape == (hidden,):
        return "rms", module.weight, None, float(module.eps)
    return None


def _product(module: nn.Module, quant_path: str | None, dtype: torch.dtype) -> tuple[Product, list] | None:
    """The C description of one of the layer's products in a step of ``dtype``, or None if it
    would not take a kernel."""
    if type(module) is linear.CpuLinear:
        w, b = module.weight, module.bias
        if w.dtype != dtype or not w.is_contiguous() or w.numel() < linear.MIN_COMPILED_ELEMENTS:
            return None
        if b is not None and (b.dtype != dtype or not b.is_contiguous()):
            return None
        if native.gemv_path(dtype) is None or module._kernel(1) != "gemv":
            return None
        slots = [_slot(module, "weight")] + ([] if b is None else [_slot(module, "bias")])
        return Product(DENSE_WEIGHTS, w.data_ptr(), None if b is None else b.data_ptr(), w.shape[0], w.shape[1]), slots
    if isinstance(module, QuantizedLinear) and module.kernels and module.kernels == quant_path and dtype == torch.float32:
        blocks, b = module.blocks, module.bias
        if not blocks.is_contiguous() or module.in_features % 32:
            return None
        if b is not None and (b.dtype != torch.float32 or not b.is_contiguous()):
            return None
        slots = [_slot(module, "blocks")] + ([] if b is None else [_slot(module, "bias")])
        return Product(module.kind.id, blocks.data_ptr(), None if b is None else b.data_ptr(), module.out_features,
                       module.in_features), slots  # fmt: skip
    return None


def _qkv(qkv: nn.Module, quant_path, dtype: torch.dtype):
    """The q/k/v projection's products: its one product and slots, the further products (two,
    empty but for a ``MixedQuantizedLinear``'s second and third parts, which write the rows after),
    and their slots; None where the step cannot take it. A part's product adds its rows' slice of
    the layer's bias (the parts hold none)."""
    if not isinstance(qkv, MixedQuantizedLinear):
        made = _product(qkv, quant_path, dtype)
        return None if made is None else (made, [NO_PRODUCT, NO_PRODUCT], [])
    parts, b = list(qkv.parts), qkv.bias
    if not parts or len(parts) > 3 or dtype != torch.float32 or (b is not None and (b.dtype != dtype or not b.is_contiguous())):
        return None
    made = [_product(p, quant_path, dtype) for p in parts]
    if any(m is None for m in made):
        return None
    at = 0
    for (product, _), part in zip(made, parts):
        product.bias = None if b is None else b.data_ptr() + at * b.element_size()
        at += part.out_features
    rest = [m[0] for m in made[1:]] + [NO_PRODUCT] * (3 - len(parts))
    slots = [slot for _, part_slots in made[1:] for slot in part_slots] + ([] if b is None else [_slot(qkv, "bias")])
    return made[0], rest, slots


def _make(layer: nn.Module) -> _Bound | None:
    from ..attention import SelfAttention
    from ..blocks import MLP, Layer

    attn, mlp = layer.attn, layer.mlp
    if not (type(layer) is Layer and layer.norm_position == "pre" and not layer.residual_from_norm
            and layer.cross_attn is None and layer.mlp_norm is not None
            and type(attn) is SelfAttention and type(mlp) is MLP):
        return None  # fmt: skip
    modules = list(layer.modules())
    if any(m.training for m in modules) or any(m._forward_hooks or m._forward_pre_hooks for m in modules):
        return None  # attention dropout, or hooks the C step would skip
    hidden = attn.qkv.in_features
    if attn.rotary_interleaved or attn.head_dim > native.MAX_DIM or attn.num_heads % attn.num_kv_heads:
        return None
    norms = [_norm(layer.attn_norm, hidden), _norm(layer.mlp_norm, hidden)]
    act = _activation(mlp.act)
    if None in norms or norms[0][0] != norms[1][0] or act is None:
        return None
    qkv_parts = list(attn.qkv.parts) if isinstance(attn.qkv, MixedQuantizedLinear) else [attn.qkv]
    quant_path = next((m.kernels for m in (*qkv_parts, mlp.fc_in) if isinstance(m, QuantizedLinear) and m.kernels), None)
    dtype = layer.attn_norm.weight.dtype
    if dtype not in STEPS:
        return None
    qkv = _qkv(attn.qkv, quant_path, dtype)
    if qkv is None:
        return None
    products = {name: _product(module, quant_path, dtype) for name, module in
                (("out", attn.out), ("fc_in", mlp.fc_in), ("fc_out", mlp.fc_out))}  # fmt: skip
    products["qkv"], rest, rest_slots = qkv
    if mlp.gate is not None:
        products["gate"] = _product(mlp.gate, quant_path, dtype)
    if any(p is None for p in products.values()):
        return None
    inner = mlp.fc_in.out_features
    q_dim, kv_dim, _ = attn.split
    if (products["qkv"][0].n + sum(p.n for p in rest), products["qkv"][0].k) != (q_dim + 2 * kv_dim, hidden) or \
            products["fc_out"][0].k != inner or products["out"][0].n != hidden:
        return None
    slots = [slot for _, product_slots in products.values() for slot in product_slots] + rest_slots
    norm_slots = [_slot(module, name) for module in (layer.attn_norm, layer.mlp_norm) for name in ("weight", "bias")
                  if getattr(module, name, None) is not None]  # fmt: skip
    if any(t.dtype != dtype or not t.is_contiguous() for _, _, t in norm_slots):
        return None
    gate = products.get("gate", (NO_PRODUCT, []))[0]
    fc_in = products["fc_in"][0]
    gated_kernel = (gate.w is not None and act == ACT_SILU and gate.type == fc_in.type != DENSE_WEIGHTS
                    and not gate.bias and not fc_in.bias)  # fmt: skip
    (kind, w1, b1, eps1), (_, w2, b2, eps2) = norms
    plan = Plan(
        norm=NORMS[kind],
        norm1_w=None if w1 is None else w1.data_ptr(), norm1_b=None if b1 is None else b1.data_ptr(),
        norm2_w=None if w2 is None else w2.data_ptr(), norm2_b=None if b2 is None else b2.data_ptr(),
        eps1=eps1, eps2=eps2,
        qkv=products["qkv"][0], out=products["out"][0], fc_in=fc_in, gate=gate, fc_out=products["fc_out"][0],
        gated_kernel=int(gated_kernel), act=act,
        heads=attn.num_heads, kv_heads=attn.num_kv_heads, dim=attn.head_dim, hidden=hidden, inner=inner,
        scale=float(attn.scale),
        gemv_path=native.GEMV_PATHS.get(native.gemv_path(dtype) or "", 0),
        quant_path=quant_kernels.QUANT_PATHS.index(quant_path) if quant_path else 0,
        qkv_rest=(Product * 2)(*rest),
    )  # fmt: skip
    fields = [(layer._modules, name) for name in ("attn", "mlp", "attn_norm", "mlp_norm", "cross_attn")]
    fields += [(attn._modules, name) for name in ("qkv", "out")]
    if isinstance(attn.qkv, MixedQuantizedLinear):
        fields += [(attn.qkv._modules, "parts")] + [(attn.qkv.parts._modules, str(i)) for i in range(len(qkv_parts))]
    fields += [(mlp._modules, name) for name in ("fc_in", "gate", "fc_out")]
    fields += [(layer.__dict__, name) for name in ("norm_position", "residual_from_norm")]
    fields += [(attn.__dict__, name) for name in ("scale", "num_heads", "num_kv_heads", "head_dim", "rotary_interleaved",
                                                 "split")]
    fields += [(mlp.__dict__, "act")] + [(norm.__dict__, "eps") for norm in (layer.attn_norm, layer.mlp_norm)]
    fields += [(m.__dict__, "training") for m in modules]
    hooks = [d for m in modules for d in (m._forward_hooks, m._forward_pre_hooks)]
    return _Bound(plan, slots + norm_slots, fields, hooks, torch.get_num_threads(), hidden, dtype)


def step(layer: nn.Module, x: torch.Tensor, rope, cache) -> torch.Tensor | None:
    """``layer(x, None, rope, cache)`` for one token in one C call, or None where the C step does
    not apply (the caller then runs the modules)."""
    dtype = x.dtype
    if x.shape[0] != 1 or x.shape[1] != 1 or dtype not in STEPS or torch.is_grad_enabled() or not x.is_cpu \
            or not x.is_contiguous():
        return None  # fmt: skip
    keys, values = cache.keys, cache.values
    start = cache.start
    if keys.dtype != dtype or values.dtype != dtype or not (keys.is_contiguous() and values.is_contiguous()) \
            or keys.shape != values.shape or keys.shape[0] != 1 or start >= keys.shape[2] or not keys.is_cpu \
            or not values.is_cpu:
        return None  # fmt: skip
    rot, cos, sin = 0, None, None
    if rope is not None:
        cos, sin = rope
        if cos.dtype != dtype or sin.dtype != dtype or not (cos.is_contiguous() and sin.is_contiguous()) \
                or cos.numel() != cos.shape[-1] or sin.shape != cos.shape:
            return None  # fmt: skip
        rot = cos.shape[-1]
    # The plan, made at the layer's first step of a decode (``install`` drops the last decode's):
    # False where the layer does not qualify.
    bound = layer.__dict__.get("_step_plan")
    if bound is False:
        return None
    threads = torch.get_num_threads()
    if bound is None or bound.threads != threads or not bound.current():
        bound = _make(layer)
        layer.__dict__["_step_plan"] = False if bound is None else bound
        if bound is None:
            return None
    plan = bound.plan
    if dtype != bound.dtype or x.shape[2] != bound.hidden or keys.shape[1] != plan.kv_heads or keys.shape[3] != plan.dim \
            or rot > plan.dim or rot % 2:
        return None  # fmt: skip
    lib = native.library()
    if lib is None:
        return None
    y = torch.empty(x.shape, dtype=dtype)
    done = getattr(lib, STEPS[dtype])(
        ctypes.byref(plan), x.data_ptr(), y.data_ptr(), keys.data_ptr(), values.data_ptr(), keys.shape[2], start, rot,
        None if cos is None else cos.data_ptr(), None if sin is None else sin.data_ptr(), threads,
    )  # fmt: skip
    return y if done == 0 else None


def forget(layer: nn.Module) -> None:
    """Drop the layer's plan (made again, or found not to apply, at its next step)."""
    layer.__dict__.pop("_step_plan", None)


__all__ = ["Plan", "forget", "step"]
