"""C kernels for what PyTorch's CPU operators do slowly in a decoding step, built on first use
with the system's C compiler (every ``csrc/*.c`` into one library) and loaded with ctypes.

A decoding step of a few rows reads every weight once and little else, so it is bound by memory:
the kernels here read what they need once, front to back.

- ``csrc/linear.c``: the linear layers of a step with 2 to 8 rows (batched or beam decoding),
  on a copy of the weight stored in blocks of 16 outputs (``block_weight``);
  ``runtime.linear.CpuLinear`` decides when.
- ``csrc/attention.c``: the attention of a step, whose keys and values are cold in memory every
  step (the weights streamed through the caches since the last one): the cross-attention of an
  encoder-decoder's step (a few query rows per source over every source token, each source's
  keys and values read once, the output written in the layout of the output projection's
  input), and the self-attention of a step (one new query per row over its cached keys and
  values), where SDPA's blocked kernel spends most of its time setting up blocks for a single
  query. Their results differ from PyTorch's by summation order and a polynomial exp (~3e-7).
- ``csrc/norm.c``: a post-norm layer's residual sum and LayerNorm in one call for a step's few
  rows (three per layer; each operator after a weight stream starts cold). Single-threaded.
- ``csrc/quant.c`` (with ``quant_k.c``, ``quant_x86.c``, ``quant_simd.h``): linear layers on
  weights kept in llama.cpp's block formats (Q8_0, Q4_0, Q4_1, and Q5_0, Q5_1 and the K-quants
  Q4_K, Q5_K and Q6_K) for the rows of a step or a prompt, the activations quantized on the
  fly to int8 blocks for integer dot products; a scalar, an AVX2 and an AVX-512 VNNI path in one
  library, chosen at run time from the CPU; and the quantization of a float matrix into those
  blocks and back. Their bindings are ``runtime.quant_kernels``.
- ``csrc/gemv.c``: the one-row product of a float32 or bfloat16 linear layer (batch-1
  decoding), reading several far-apart rows at once (more streams of memory in flight than
  MKL's GEMV keeps); AVX-512 (with AVX512-BF16's ``vdpbf16ps`` for bfloat16) or AVX2, chosen
  from the CPU (``gemv_path``; ``LMATLAS_GEMV_PATH`` forces one); a candidate of ``runtime.linear``'s calibration beside ATen's.
- ``csrc/layer.c``: a pre-norm decoder layer's whole step for one token in one call (norms,
  the products through the kernels above, rotation, the cache, attention, activations), for
  ``runtime.layer_step``.
- ``csrc/evict.c``: flushing a buffer from the caches, so that ``calibrate`` times kernels on
  weights that come from memory, as a decode's do, whatever the size of the last-level cache.
- ``csrc/team.c``: the size of the last parallel region's team, for tests. Every kernel with a
  parallel region takes its thread count as an argument: ``torch.get_num_threads()``, which the
  runtime's thread policy sets (``threads.StepThreads``), so that the C kernels and PyTorch's
  operators follow one choice whichever OpenMP library the torch wheel ships.

Figures: ``benchmarks/README.md``. The library goes to ``$LMATLAS_CACHE`` (default
``~/.cache/lmatlas``), named by a hash of the source, the compiler command and the CPU's
instruction-set flags, since it is built for this CPU (``-march=native``; the quantized and one-row kernels' files are built
without it, their paths compiled for their instruction sets by target attributes). Without a compiler,
or with the runtime switched off (``switch.enabled``), everything falls back to the PyTorch path
(a warning says why, once).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..errors import LmatlasError
from .switch import enabled

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = sorted(_CSRC.glob("*.c"))
_HEADERS = sorted(_CSRC.glob("*.h"))
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math"]
# Files whose instruction sets are chosen at run time: built for the baseline of the
# architecture, each path compiled for its own by target attributes (``quant_paths``).
_PORTABLE = [path for path in _SOURCES if path.name.startswith(("quant", "gemv"))]
# Zeroing a kernel's few accumulators stays a loop of vector stores: turned into a call to memset,
# it cost a sixth of a one-row product's time (the call, and loads that wait on its stores).
_PORTABLE_FLAGS = [f for f in _FLAGS if f not in ("-march=native", "-shared")] + ["-ffp-contract=off",
                                                                                "-fno-tree-loop-distribute-patterns"]
_LIBS = ["-lm"]  # layer.c's erff, tanhf, expf
GEMV_PATHS = {"avx2": 1, "avx512": 2}  # gemv.c's numbers
GEMV_DTYPES = {torch.float32: 0, torch.bfloat16: 1}
# The C side's fixed-size buffers (attention.c's MAX_ROWS and MAX_DIM, linear.c's MAX_LINEAR_ROWS).
MAX_ROWS = 16
MAX_DIM = 256
MAX_LINEAR_ROWS = 8
BLOCK = 16

_library: ctypes.CDLL | None = None
_failed: str | None = None


def _cache_dir() -> Path:
    root = os.environ.get("LMATLAS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lmatlas"
    )
    return Path(root) / "kernels"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def _build() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise RuntimeError("no C compiler found (set CC)")
    sources = [path.read_bytes() for path in _SOURCES + _HEADERS]
    key = hashlib.sha256(b"\0".join([*sources, " ".join([compiler, *_FLAGS, *_PORTABLE_FLAGS, *_LIBS]).encode(), _cpu_flags().encode()]))
    target = _cache_dir() / f"lmatlas-{key.hexdigest()[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Build next to the target and rename: another process may be building it too.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            with tempfile.TemporaryDirectory(dir=target.parent) as objects:
                portable = [str(Path(objects) / f"{path.stem}.o") for path in _PORTABLE]
                for path, obj in zip(_PORTABLE, portable):
                    _compile(compiler, [*_PORTABLE_FLAGS, "-c", str(path), "-o", obj])
                native = [str(path) for path in _SOURCES if path not in _PORTABLE]
                _compile(compiler, [*_FLAGS, *native, *portable, *_LIBS, "-o", tmp])
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    i32 = ctypes.c_int
    lib.few_queries_attention.argtypes = [p, p, p, p, p, p, ctypes.c_float, i64, i64, i64, i64, i64, i32]
    lib.few_queries_attention.restype = None
    lib.decode_step_attention.argtypes = [p, i64, p, p, p, p, p, ctypes.c_float, i64, i64, i64, i64, i64, i64, i32]
    lib.decode_step_attention.restype = None
    lib.linear_rows.argtypes = [p, p, p, p, i64, i64, i64, i32]
    lib.linear_rows.restype = None
    lib.add_layer_norm.argtypes = [p, p, p, p, p, i64, i64, ctypes.c_float]
    lib.add_layer_norm.restype = None
    lib.quant_linear.argtypes = [i32, i32, p, p, p, p, i64, i64, i64, i32]
    lib.quant_linear.restype = i32
    lib.quant_gated.argtypes = [i32, i32, p, p, p, p, i64, i64, i64, i32]
    lib.quant_gated.restype = i32
    lib.quant_quantize.argtypes = [i32, p, i64, i64, p, i32]
    lib.quant_quantize.restype = i32
    lib.quant_dequantize.argtypes = [i32, p, i64, i64, p, i32]
    lib.quant_dequantize.restype = i32
    lib.quant_activations.argtypes = [p, i64, i64, p, p, p]
    lib.quant_activations.restype = None
    lib.quant_paths.argtypes = []
    lib.quant_paths.restype = i32
    lib.gemv_paths.argtypes = [i32]
    lib.gemv_paths.restype = i32
    lib.gemv.argtypes = [i32, i32, p, p, p, p, i64, i64, i32]
    lib.gemv.restype = i32
    for step in (lib.layer_step, lib.layer_step_bf16):
        step.argtypes = [p, p, p, p, p, i64, i64, i64, p, p, i32]
        step.restype = i32
    lib.lmatlas_threads_used.argtypes = []
    lib.lmatlas_threads_used.restype = i32
    lib.lmatlas_evict.argtypes = [p, i64]
    lib.lmatlas_evict.restype = None
    return lib


def _compile(compiler: str, arguments: list[str]) -> None:
    done = subprocess.run([compiler, *arguments], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[-500:]}")


def library() -> ctypes.CDLL | None:
    """The built kernels, or None where they cannot be (the reason is warned once)."""
    global _library, _failed
    if _library is not None or _failed is not None:
        return _library
    if not enabled():
        return None
    if not sys.platform.startswith("linux"):
        _failed = "built on Linux only"
        return None
    try:
        _library = _build()
    except Exception as e:  # no compiler, a compiler without OpenMP, a read-only home...
        _failed = f"{type(e).__name__}: {e}"
        warnings.warn(
            f"lmatlas: the C decoding kernels are unavailable ({_failed}); decoding falls back to PyTorch's "
            "operators, which are slower",
            RuntimeWarning,
            stacklevel=3,
        )
    return _library


def few_queries_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    heads: int,
) -> torch.Tensor | None:
    """Softmax attention of (batch, t, heads x head_dim) queries over the keys and values of
    fewer sources, (sources, heads, source, head_dim) each, with the keys stored transposed
    (``k.transpose(-1, -2)`` contiguous); each source serves batch / sources consecutive rows.
    ``mask``: boolean (sources, 1, 1, source), True where a key may be attended. Returns the
    (batch, t, heads x head_dim) output, or None where the kernel does not apply (the caller then
    takes PyTorch's path)."""
    b, t, width = q.shape
    sources, _, length, dim = v.shape
    rows = (b // sources) * t
    kt = k.transpose(-1, -2)
    shapes_fit = b % sources == 0 and k.shape == v.shape and v.shape[1] == heads and width == heads * dim
    lib = _library_if(
        shapes_fit and rows <= MAX_ROWS and dim <= MAX_DIM and q.is_contiguous() and kt.is_contiguous()
        and v.is_contiguous() and _takes(mask, sources * length, q, k, v)
    )  # fmt: skip
    if lib is None:
        return None
    keep = _bytes(mask, sources, length)
    out = torch.empty_like(q)
    work = torch.empty(sources * heads * rows * length, dtype=torch.float32)
    lib.few_queries_attention(
        q.data_ptr(), kt.data_ptr(), v.data_ptr(), _pointer(keep), out.data_ptr(), work.data_ptr(),
        scale, sources, heads, rows, length, dim, torch.get_num_threads(),
    )  # fmt: skip
    return out


def decode_step_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    length: int,
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor | None:
    """Softmax attention of one new query per row, (batch, heads, 1, head_dim) with each row's
    heads ``head_dim`` apart, over the first ``length`` positions of (batch, kv_heads,
    max_length, head_dim) key and value caches. ``mask``: None or boolean (batch, 1, 1, length),
    True where a key may be attended (a float bias — ALiBi, T5's buckets — is not taken).
    Returns (batch, 1, heads x head_dim), or None where the kernel does not apply."""
    b, heads, t, dim = q.shape
    kv_heads, max_length = k_cache.shape[1], k_cache.shape[2]
    shapes_fit = k_cache.shape == v_cache.shape and k_cache.shape[0] == b and heads % kv_heads == 0
    lib = _library_if(
        shapes_fit and t == 1 and dim <= MAX_DIM and 0 < length <= max_length and q.stride(1) == dim
        and q.stride(3) == 1 and k_cache.is_contiguous() and v_cache.is_contiguous()
        and _takes(mask, b * length, q, k_cache, v_cache)
    )  # fmt: skip
    if lib is None:
        return None
    keep = _bytes(mask, b, length)
    out = torch.empty(b, 1, heads * dim, dtype=torch.float32)
    work = torch.empty(b * heads * length, dtype=torch.float32)
    lib.decode_step_attention(
        q.data_ptr(), q.stride(0), k_cache.data_ptr(), v_cache.data_ptr(), _pointer(keep),
        out.data_ptr(), work.data_ptr(), scale, b, heads, kv_heads, max_length, length, dim,
        torch.get_num_threads(),
    )  # fmt: skip
    return out


def _library_if(applies: bool) -> ctypes.CDLL | None:
    """The built kernels for a call whose arguments they take; None otherwise (nothing built)."""
    return library() if applies else None


def _takes(mask: torch.Tensor | None, mask_size: int, *tensors: torch.Tensor) -> bool:
    """What every attention kernel needs: float32 tensors on the CPU that need no gradient, and a
    boolean mask of ``mask_size`` elements or none (a float bias, ALiBi's or T5's, is not taken)."""
    return (
        all(t.dtype == torch.float32 and t.device.type == "cpu" and not t.requires_grad for t in tensors)
        and (mask is None or (mask.dtype == torch.bool and mask.numel() == mask_size))
    )


def _pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _bytes(mask: torch.Tensor | None, rows: int, length: int) -> torch.Tensor | None:
    """A boolean mask as the kernels read it, (rows, length) bytes of 0 or 1: torch stores bools
    that way, so this copies only a mask that is not contiguous."""
    return None if mask is None else mask.reshape(rows, length).contiguous()


def block_weight(weight: torch.Tensor) -> torch.Tensor:
    """A (out, in) float32 weight stored for ``linear_rows``: (ceil(out / 16), in, 16), zero
    outputs padding the last block."""
    out, inp = weight.shape
    full, rest = divmod(out, BLOCK)
    # Written in place, block by block: no padded copy of the weight on the way.
    blocked = weight.new_zeros(full + (rest > 0), inp, BLOCK)
    blocked[:full].transpose(1, 2).copy_(weight[: full * BLOCK].view(full, BLOCK, inp))
    if rest:
        blocked[full, :, :rest].copy_(weight[full * BLOCK :].t())
    return blocked


def linear_rows(x: torch.Tensor, blocked: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    """``x @ weight.T + bias`` for (rows, in) float32 ``x`` with 1 <= rows <= ``MAX_LINEAR_ROWS``,
    from ``block_weight(weight)``. The caller checks that the library is built."""
    rows, inp = x.shape
    x = x.contiguous()
    y = torch.empty(rows, out_features, dtype=torch.float32)
    bias = None if bias is None else bias.contiguous()
    library().linear_rows(
        x.data_ptr(), blocked.data_ptr(), _pointer(bias), y.data_ptr(), rows, out_features, inp,
        torch.get_num_threads(),
    )
    return y


def add_layer_norm(x: torch.Tensor, y: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor | None:
    """``norm(x + y)`` for the few float32 rows of a decoding step, or None where the kernel does
    not apply (more rows, other dtypes, gradients)."""
    dim = x.shape[-1]
    rows = x.numel() // dim if dim else 0
    w, b = norm.weight, norm.bias
    lib = _library_if(
        0 < rows <= MAX_ROWS
        and x.shape == y.shape
        and norm.normalized_shape == (dim,)
        and x.dtype == y.dtype == torch.float32
        and (w is None or w.dtype == torch.float32)
        and (b is None or b.dtype == torch.float32)
        and x.device.type == "cpu"
        and x.is_contiguous()
        and y.is_contiguous()
        and not torch.is_grad_enabled()
    )
    if lib is None:
        return None
    out = torch.empty_like(x)
    lib.add_layer_norm(x.data_ptr(), y.data_ptr(), _pointer(w), _pointer(b), out.data_ptr(), rows, dim, norm.eps)
    return out


def gemv_path(dtype: torch.dtype) -> str | None:
    """The path of the one-row kernel (``csrc/gemv.c``) for weights of ``dtype`` (float32 or
    bfloat16): ``LMATLAS_GEMV_PATH`` (avx2 or avx512) where set, else the fastest this CPU runs;
    None for another dtype, without AVX2, or without the library."""
    lib = library()
    if lib is None or dtype not in GEMV_DTYPES:
        return None
    supported = lib.gemv_paths(GEMV_DTYPES[dtype])
    available = [name for name in ("avx2", "avx512") if supported >> GEMV_PATHS[name] & 1]
    forced = os.environ.get("LMATLAS_GEMV_PATH", "").strip().lower()
    if not forced:
        return available[-1] if available else None
    if forced not in GEMV_PATHS:
        raise LmatlasError(f"LMATLAS_GEMV_PATH={forced!r} names no path of the one-row kernel; use one of "
                           f"{', '.join(GEMV_PATHS)}")
    if forced not in available:
        name = str(dtype).removeprefix("torch.")
        raise LmatlasError(f"LMATLAS_GEMV_PATH={forced}: this CPU cannot run that path for {name} weights "
                           f"(it runs {', '.join(available) or 'none'})")
    return forced


def gemv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, path: str) -> torch.Tensor:
    """``w @ x + bias`` for one row ``x`` (K,) and a contiguous ``w`` (N, K), all float32 or all
    bfloat16: float32 sums, a bfloat16 result rounded once. The caller checks dtypes and the
    library."""
    n, k = w.shape
    x = x.contiguous()
    y = torch.empty(n, dtype=w.dtype)
    done = library().gemv(
        GEMV_PATHS[path], GEMV_DTYPES[w.dtype], x.data_ptr(), w.data_ptr(),
        _pointer(None if bias is None else bias.contiguous()), y.data_ptr(), n, k, torch.get_num_threads(),
    )  # fmt: skip
    if done != 0:
        raise AssertionError(f"gemv refused its arguments ({done})")
    return y


def gemv_bound(w: torch.Tensor, bias: torch.Tensor | None, path: str) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``gemv`` bound to the memory of ``w`` and ``bias`` (contiguous, one dtype): ``run(x,
    threads)`` for a contiguous row ``x`` of that dtype and width. A decoding step calls each
    layer's product once, and this leaves it a buffer and one call; the caller keeps ``w`` and
    ``bias`` alive and checks that their storage is still theirs before each call."""
    n, k = w.shape
    dtype = w.dtype
    call = functools.partial(library().gemv, GEMV_PATHS[path], GEMV_DTYPES[dtype])
    wp, bp = w.data_ptr(), _pointer(bias)

    def run(x: torch.Tensor, threads: int) -> torch.Tensor:
        y = torch.empty(n, dtype=dtype)
        done = call(x.data_ptr(), wp, bp, y.data_ptr(), n, k, threads)
        if done != 0:
            raise AssertionError(f"gemv refused its arguments ({done})")
        return y

    return run


def evict(tensors) -> bool:
    """Flush the memory of ``tensors`` from every level of the caches (``csrc/evict.c``), so that
    the next read comes from memory; False without the library."""
    lib = library()
    if lib is None:
        return False
    for t in tensors:
        lib.lmatlas_evict(t.data_ptr(), t.numel() * t.element_size())
    return True


def threads_used() -> int:
    """The number of threads the kernels' last parallel region ran on (0 before any)."""
    lib = library()
    return 0 if lib is None else lib.lmatlas_threads_used()


__all__ = [
    "add_layer_norm", "block_weight", "decode_step_attention", "evict", "few_queries_attention", "gemv", "gemv_bound",
    "gemv_path", "library", "linear_rows", "threads_used",
]  # fmt: skip
