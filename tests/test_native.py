"""The C kernels (lmatlas.runtime.native) give PyTorch's numbers, and their absence changes nothing.

This machine has a C compiler: the kernel must build here (a test fails, not skips, if it does
not). The parity and generation tests of the encoder-decoders run through it as well.
"""

from __future__ import annotations

import pytest
import torch

from lmatlas import runtime
from lmatlas.errors import LmatlasError
from lmatlas.runtime import linear, native
from lmatlas.attention import few_queries_attention


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """A native module that has not tried to build yet, building into a temporary cache."""
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_failed", None)
    monkeypatch.setenv("LMATLAS_CACHE", str(tmp_path))
    return tmp_path


def _inputs(sources, group, t, heads, dim, length, padded, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = sources * group
    q = torch.randn(b, t, heads * dim, generator=g)
    # Keys stored transposed, as Seq2SeqCache keeps them.
    k = torch.randn(sources, heads, dim, length, generator=g).transpose(-1, -2)
    v = torch.randn(sources, heads, length, dim, generator=g)
    mask = None
    if padded:
        keep = torch.ones(sources, length, dtype=torch.bool)
        keep[0, length // 2 :] = False
        if sources > 1:
            keep[-1, :] = False  # a source of padding only: its rows average the values
        mask = keep[:, None, None, :]
    return q, k, v, mask


def _reference(q, k, v, mask, scale, heads, sources):
    b, t, width = q.shape
    dim, group = width // heads, b // sources
    qh = q.view(sources, group, t, heads, dim).permute(0, 3, 1, 2, 4).reshape(sources, heads, group * t, dim)
    y = few_queries_attention(qh, k, v, mask, scale)
    return y.view(sources, heads, group, t, dim).permute(0, 2, 3, 1, 4).reshape(b, t, width)


def test_the_kernel_builds_on_this_machine(fresh_native):
    assert native.library() is not None, native._failed
    assert list(fresh_native.glob("kernels/lmatlas-*.so"))


@pytest.mark.parametrize(
    "sources,group,t,heads,dim,length,padded",
    [
        (1, 4, 1, 12, 64, 400, False),  # a BART-base beam-search step
        (2, 3, 1, 5, 8, 11, True),  # odd heads and widths, a padded batch of sources
        (3, 1, 7, 3, 20, 5, True),  # several target positions per row (a forward pass)
        (1, 16, 1, 1, 256, 1, False),  # the limits: 16 rows, head_dim 256, one source token
        (2, 2, 4, 4, 33, 130, True),
    ],
)
def test_the_kernel_matches_pytorch(sources, group, t, heads, dim, length, padded):
    q, k, v, mask = _inputs(sources, group, t, heads, dim, length, padded)
    scale = dim**-0.5
    with torch.inference_mode():
        got = native.few_queries_attention(q, k, v, mask, scale, heads)
        want = _reference(q, k, v, mask, scale, heads, sources)
    assert got is not None
    assert got.shape == want.shape
    assert torch.isfinite(got).all()
    assert (got - want).abs().max().item() < 1e-5


def test_large_scores_do_not_overflow():
    q, k, v, mask = _inputs(1, 4, 1, 2, 16, 50, False)
    with torch.inference_mode():
        got = native.few_queries_attention(q * 100, k, v, mask, 1.0, 2)
        want = _reference(q * 100, k, v, mask, 1.0, 2, 1)
    assert torch.isfinite(got).all()
    assert (got - want).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    "change",
    ["float64", "too many rows", "head_dim above 256", "keys not transposed", "needs grad"],
)
def test_where_the_kernel_does_not_apply_it_declines(change):
    q, k, v, mask = _inputs(1, 4, 1, 2, 8, 9, True)
    if change == "float64":
        q, k, v = q.double(), k.double(), v.double()
    elif change == "too many rows":
        q, k, v, mask = _inputs(1, native.MAX_ROWS + 1, 1, 2, 8, 9, True)
    elif change == "head_dim above 256":
        q, k, v, mask = _inputs(1, 2, 1, 1, native.MAX_DIM + 1, 9, True)
    elif change == "keys not transposed":
        k = k.contiguous()
    else:
        q.requires_grad_(True)
    assert native.few_queries_attention(q, k, v, mask, 0.5, q.shape[-1] // v.shape[-1]) is None


def test_switched_off_it_is_never_built(fresh_native, monkeypatch):
    monkeypatch.setenv("LMATLAS_KERNELS", "0")
    assert native.library() is None
    assert not list(fresh_native.glob("kernels/*.so"))


def test_without_a_compiler_it_warns_once_and_declines(fresh_native, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_native / "no-such-compiler"))
    q, k, v, mask = _inputs(1, 2, 1, 2, 8, 9, False)
    with pytest.warns(RuntimeWarning, match="C decoding kernels are unavailable"):
        assert native.few_queries_attention(q, k, v, mask, 0.5, 2) is None
    # Once: the next call neither warns nor retries.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.few_queries_attention(q, k, v, mask, 0.5, 2) is None


def _step_inputs(batch, heads, kv_heads, dim, max_length, length, padded, seed=0):
    g = torch.Generator().manual_seed(seed)
    # q as the fused projection leaves it: each row's heads side by side, then keys and values.
    fused = torch.randn(batch, 1, (heads + 2 * kv_heads) * dim, generator=g)
    q = fused[..., : heads * dim].view(batch, 1, heads, dim).transpose(1, 2)
    k_cache = torch.randn(batch, kv_heads, max_length, dim, generator=g)
    v_cache = torch.randn(batch, kv_heads, max_length, dim, generator=g)
    mask = None
    if padded:
        keep = torch.ones(batch, length, dtype=torch.bool)
        keep[0, : length // 2] = False  # left padding
        mask = keep[:, None, None, :]
    return q, k_cache, v_cache, mask


@pytest.mark.parametrize(
    "batch,heads,kv_heads,dim,max_length,length,padded",
    [
        (4, 12, 12, 64, 65, 33, False),  # a BART-base beam-search step
        (3, 5, 5, 8, 20, 1, False),  # the first step: one cached position
        (2, 6, 2, 20, 17, 17, True),  # grouped-query heads, a full cache, left padding
        (1, 4, 1, 256, 9, 5, True),  # multi-query, head_dim 256
    ],
)
def test_the_decoding_step_kernel_matches_sdpa(batch, heads, kv_heads, dim, max_length, length, padded):
    q, k_cache, v_cache, mask = _step_inputs(batch, heads, kv_heads, dim, max_length, length, padded)
    scale = dim**-0.5
    with torch.inference_mode():
        got = native.decode_step_attention(q, k_cache, v_cache, length, mask, scale)
        want = torch.nn.functional.scaled_dot_product_attention(
            q, k_cache[:, :, :length], v_cache[:, :, :length], attn_mask=mask, scale=scale,
            enable_gqa=heads != kv_heads,
        )  # fmt: skip
    assert got is not None
    assert (got - want.transpose(1, 2).reshape(batch, 1, -1)).abs().max().item() < 1e-5


@pytest.mark.parametrize("change", ["two new tokens", "a float bias", "float64", "cache not contiguous"])
def test_where_the_decoding_step_kernel_does_not_apply_it_declines(change):
    q, k_cache, v_cache, mask = _step_inputs(2, 4, 4, 8, 10, 6, True)
    if change == "two new tokens":
        q = torch.randn(2, 4, 2, 8)
    elif change == "a float bias":
        mask = torch.zeros(2, 4, 1, 6)
    elif change == "float64":
        q, k_cache, v_cache = q.double(), k_cache.double(), v_cache.double()
    else:
        k_cache = k_cache.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert native.decode_step_attention(q, k_cache, v_cache, 6, mask, 0.5) is None


@pytest.mark.parametrize("rows", range(1, native.MAX_LINEAR_ROWS + 1))
@pytest.mark.parametrize("out_features,in_features,bias", [(37, 77, True), (1, 5, False), (64, 16, True), (33, 300, False)])
def test_the_linear_kernel_matches_f_linear(rows, out_features, in_features, bias):
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(out_features, in_features, generator=g)
    b = torch.randn(out_features, generator=g) if bias else None
    x = torch.randn(rows, in_features, generator=g)
    blocked = native.block_weight(w)
    assert blocked.shape == (-(-out_features // native.BLOCK), in_features, native.BLOCK)
    got = native.linear_rows(x, blocked, b, out_features)
    want = torch.nn.functional.linear(x, w, b)
    assert (got - want).abs().max().item() < 1e-4


def test_a_linear_layer_takes_the_kernel_only_for_decoding_rows(monkeypatch):
    monkeypatch.setattr(linear, "MIN_COMPILED_ELEMENTS", 0)
    monkeypatch.setenv("LMATLAS_KERNEL_CHOICE", "linear-rows=blocked")
    layer = torch.nn.Linear(24, 40)
    runtime.install(layer)
    x = torch.randn(12, 24)
    with torch.inference_mode():
        want = torch.nn.functional.linear(x, layer.weight, layer.bias)
        with runtime.decode_rows(4):
            got_rows = layer(x[:4])
            assert layer._blocked is not None
            got_prompt = layer(x)  # more rows than the kernel takes: F.linear, no oneDNN copy
            assert layer._packed is None
    assert (got_rows - want[:4]).abs().max().item() < 1e-5
    assert (got_prompt - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("rows,dim,affine", [(4, 768, True), (1, 5, True), (16, 33, False), (3, 1, True)])
def test_the_add_and_norm_kernel_matches_layer_norm(rows, dim, affine):
    g = torch.Generator().manual_seed(dim)
    norm = torch.nn.LayerNorm(dim, eps=1e-5, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(dim, generator=g))
            norm.bias.copy_(torch.randn(dim, generator=g))
    x, y = torch.randn(rows, 1, dim, generator=g) * 3, torch.randn(rows, 1, dim, generator=g)
    with torch.inference_mode():
        got = native.add_layer_norm(x, y, norm)
        want = norm(x + y)
    assert got is not None
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("change", ["too many rows", "float64", "gradients"])
def test_where_the_add_and_norm_kernel_does_not_apply_it_declines(change):
    norm = torch.nn.LayerNorm(8)
    rows = native.MAX_ROWS + 1 if change == "too many rows" else 2
    x, y = torch.randn(rows, 8), torch.randn(rows, 8)
    if change == "float64":
        norm, x, y = norm.double(), x.double(), y.double()
    if change == "gradients":
        assert native.add_layer_norm(x, y, norm) is None
    else:
        with torch.no_grad():
            assert native.add_layer_norm(x, y, norm) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("path", sorted(native.GEMV_PATHS))
@pytest.mark.parametrize("out_features,in_features,bias",
                         [(37, 77, True), (5, 3, False), (64, 768, True), (2304, 40, False), (203, 129, True)])
def test_the_row_kernel_matches_f_linear(path, dtype, out_features, in_features, bias):
    """Each path this CPU runs (odd widths: the 8-, 16- and 32-wide loops' tails; row counts that
    leave rows past the eight parts read together, and runs shorter than eight rows) against
    F.linear: float32 sums in another order, so within the float32 sums' error, and for bfloat16
    within one rounding of the output."""
    lib = native.library()
    assert lib is not None, native._failed
    code = native.GEMV_DTYPES[dtype]
    if not lib.gemv_paths(code) >> native.GEMV_PATHS[path] & 1:
        assert lib.gemv(native.GEMV_PATHS[path], code, None, None, None, None, 1, 1, 1) == -1
        return
    g = torch.Generator().manual_seed(out_features)
    w = (torch.randn(out_features, in_features, generator=g) * 0.1).to(dtype)
    x = torch.randn(in_features, generator=g).to(dtype)
    b = torch.randn(out_features, generator=g).to(dtype) if bias else None
    got = native.gemv(x, w, b, path)
    assert got.dtype == dtype
    want = torch.nn.functional.linear(x[None].double(), w.double(), None if b is None else b.double())[0]
    tol = in_features * 2**-22 * (x.double().abs() @ w.double().abs().T) + 1e-6
    if dtype == torch.bfloat16:
        tol = tol + want.abs() * 2**-8
    assert ((got.double() - want).abs() <= tol).all()


def test_a_row_kernel_path_is_forced_by_the_environment(monkeypatch):
    lib = native.library()
    for path in native.GEMV_PATHS:
        monkeypatch.setenv("LMATLAS_GEMV_PATH", path)
        if lib.gemv_paths(native.GEMV_DTYPES[torch.float32]) >> native.GEMV_PATHS[path] & 1:
            assert native.gemv_path(torch.float32) == path
    monkeypatch.setenv("LMATLAS_GEMV_PATH", "sse9")
    with pytest.raises(LmatlasError, match="LMATLAS_GEMV_PATH='sse9' names no path of the one-row kernel"):
        native.gemv_path(torch.float32)


def test_a_forced_row_kernel_path_the_cpu_lacks_is_one_sentence(monkeypatch):
    class OnlyAvx2:
        def gemv_paths(self, dtype):
            return 1 << native.GEMV_PATHS["avx2"]

    monkeypatch.setattr(native, "library", lambda: OnlyAvx2())
    monkeypatch.setenv("LMATLAS_GEMV_PATH", "avx512")
    with pytest.raises(LmatlasError, match="this CPU cannot run that path for bfloat16 weights \\(it runs avx2\\)"):
        native.gemv_path(torch.bfloat16)
    monkeypatch.delenv("LMATLAS_GEMV_PATH")
    assert native.gemv_path(torch.bfloat16) == "avx2"


def test_the_row_kernel_refuses_another_dtype():
    lib = native.library()
    assert lib.gemv(native.GEMV_PATHS["avx2"], 7, None, None, None, None, 1, 1, 1) == -1
    assert native.gemv_path(torch.float16) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_row_kernel_path_is_the_fastest_the_cpu_runs(dtype):
    lib = native.library()
    supported = lib.gemv_paths(native.GEMV_DTYPES[dtype])
    path = native.gemv_path(dtype)
    if supported >> native.GEMV_PATHS["avx512"] & 1:
        assert path == "avx512"
    elif supported:
        assert path == "avx2"
    else:
        assert path is None
