"""The CPU runtime's kernels (lmatlas.runtime) change only the summation order.

The compiled matrix-vector product is used for weights above a size threshold, which the tiny
test models are not: these tests lower it so that every kernel runs.
"""

from __future__ import annotations

import contextlib
import warnings
from unittest import mock

import pytest
import torch
from torch import nn

from lmatlas import runtime
from lmatlas.runtime import linear, native, threads

from .test_parity_decoders import TOL, left_padded_batch, saved  # noqa: F401  (the fixture)


@pytest.fixture
def all_kernels(monkeypatch):
    monkeypatch.setattr(linear, "MIN_COMPILED_ELEMENTS", 0)


def _plain(model):
    import copy

    twin = copy.deepcopy(model)
    return runtime.uninstall(twin)


@pytest.mark.parametrize("variant", ["gpt2", "llama-gqa", "falcon-rw-alibi-sequential"])
def test_kernels_keep_logits_and_tokens(variant, saved, all_kernels):
    _, ours = saved(variant)
    runtime.install(ours)
    assert any(isinstance(m, runtime.CpuLinear) for m in ours.modules())
    plain = _plain(ours)
    assert not any(isinstance(m, runtime.CpuLinear) for m in plain.modules())
    ids, mask = left_padded_batch()
    with torch.inference_mode():
        # One row at a time: the compiled matrix-vector product.
        for r in range(ids.shape[0]):
            cache_a, cache_b = ours.new_cache(1, 12), plain.new_cache(1, 12)
            a = ours(ids[r:r + 1, -3:], cache=cache_a).logits
            b = plain(ids[r:r + 1, -3:], cache=cache_b).logits
            step_a = ours(ids[r:r + 1, :1], cache=cache_a).logits
            step_b = plain(ids[r:r + 1, :1], cache=cache_b).logits
            assert (a - b).abs().max().item() <= TOL and (step_a - step_b).abs().max().item() <= TOL
    for kw in (dict(max_new_tokens=8), dict(max_new_tokens=6, num_beams=3)):
        assert torch.equal(ours.generate(ids, mask, **kw), plain.generate(ids, mask, **kw))
        assert torch.equal(ours.generate(ids[:1], mask[:1], **kw), plain.generate(ids[:1], mask[:1], **kw))
    runtime.release(ours)


def test_packed_copy_only_while_decoding_several_rows(saved, all_kernels, monkeypatch):
    """Batch 1 keeps no second copy of the weights; a batch of 2 to 8 rows, with the C kernel
    chosen, makes its blocked copy and no oneDNN copy (its prompt takes F.linear); ``release``
    drops them."""
    monkeypatch.setenv("LMATLAS_KERNEL_CHOICE", "linear-rows=blocked")
    _, ours = saved("gpt2")
    runtime.install(ours)
    runtime.release(ours)
    linears = [m for m in ours.modules() if isinstance(m, runtime.CpuLinear)]
    ids, mask = left_padded_batch()
    assert 1 < ids.shape[0] <= native.MAX_LINEAR_ROWS
    ours.generate(ids[:1], mask[:1], max_new_tokens=3)
    assert all(m._packed is None and m._blocked is None for m in linears)
    ours.generate(ids, mask, max_new_tokens=3)
    assert all(m._blocked is not None and m._packed is None for m in linears)
    runtime.release(ours)
    assert all(m._packed is None and m._blocked is None for m in linears)


def test_each_several_rows_kernel_gives_the_same_tokens(saved, all_kernels, monkeypatch):
    """The C kernel, oneDNN's packed copy and F.linear, each forced, decode the same tokens; where
    the C kernels cannot be built, the C kernel is not among the candidates."""
    _, ours = saved("gpt2")
    runtime.install(ours)
    linears = [m for m in ours.modules() if isinstance(m, runtime.CpuLinear)]
    ids, mask = left_padded_batch()
    tokens = {}
    for name in linear.ROWS_KERNELS:
        monkeypatch.setenv("LMATLAS_KERNEL_CHOICE", f"linear-rows={name}")
        runtime.release(ours)
        for m in linears:
            m._kernels = None
        tokens[name] = ours.generate(ids, mask, max_new_tokens=5)
        assert all((m._packed is not None) == (name == "onednn") for m in linears)
        assert all((m._blocked is not None) == (name == "blocked") for m in linears)
    assert torch.equal(tokens["aten"], tokens["onednn"]) and torch.equal(tokens["aten"], tokens["blocked"])
    runtime.release(ours)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_failed", "switched off for this test")
    runners, _ = linear._rows_candidates(linears[0].weight, linears[0].bias, 4)
    assert "blocked" not in runners and "aten" in runners


def test_no_copy_without_room_in_memory(saved, all_kernels, monkeypatch, tmp_path):
    """When a copy would leave less than the reserve of memory available, the several-rows
    kernels make none and the layers compute from their own weights (the same tokens); the
    process is told once."""
    from lmatlas.runtime import memory

    _, ours = saved("gpt2")
    runtime.install(ours)
    linears = [m for m in ours.modules() if isinstance(m, runtime.CpuLinear)]
    ids, mask = left_padded_batch()
    want = _plain(ours).generate(ids, mask, max_new_tokens=5)
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:        2097152 kB\nMemFree:          100000 kB\nMemAvailable:     500000 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", str(info))
    monkeypatch.setattr(memory, "_warned", False)
    for name in ("onednn", "blocked"):
        monkeypatch.setenv("LMATLAS_KERNEL_CHOICE", f"linear-rows={name}")
        runtime.release(ours)
        for m in linears:
            m._kernels = None
        with pytest.warns(RuntimeWarning, match="488 MB of memory available; the batched kernels' weight copies are not made") \
                if name == "onednn" else contextlib.nullcontext():
            assert torch.equal(ours.generate(ids, mask, max_new_tokens=5), want)
        assert all(m._packed is None and m._blocked is None for m in linears)
        # Refused once, a layer keeps to its own weight until release, however memory changes.
        info.write_text("MemTotal:        2097152 kB\nMemFree:          100000 kB\nMemAvailable:    2000000 kB\n")
        assert torch.equal(ours.generate(ids, mask, max_new_tokens=5), want)
        assert all(m._packed is None and m._blocked is None for m in linears)
        runtime.release(ours)
        ours.generate(ids, mask, max_new_tokens=2)
        assert all((m._packed if name == "onednn" else m._blocked) is not None for m in linears)
        info.write_text("MemTotal:        2097152 kB\nMemFree:          100000 kB\nMemAvailable:     500000 kB\n")
    runtime.release(ours)


def test_room_for_a_copy(monkeypatch, tmp_path):
    """The reserve: an eighth of the memory and at least 512 MB; a container's limit counts
    (cgroup v2's files, or v1's); unknown memory allows the copy."""
    from lmatlas.runtime import memory

    monkeypatch.setattr(memory, "_warned", False)
    gb = 1 << 30
    for total, available, nbytes, room in ((16 * gb, 4 * gb, 2 * gb, True), (16 * gb, 4 * gb, 2 * gb + 1, False),
                                           (2 * gb, 1 * gb, gb // 2, True), (2 * gb, 1 * gb, gb // 2 + 1, False)):
        with mock.patch.object(memory, "meminfo", return_value=(total, available)), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert memory.room_for(nbytes) is room, (total, available, nbytes)
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       16777216 kB\nMemAvailable:    8388608 kB\n")  # 16 GB, 8 available
    limit, used = tmp_path / "memory.max", tmp_path / "memory.current"
    monkeypatch.setattr(memory, "MEMINFO", str(info))
    monkeypatch.setattr(memory, "CGROUP_LIMITS", ((str(tmp_path / "absent.max"), str(tmp_path / "absent")),
                                                  (str(limit), str(used))))
    assert memory.meminfo() == (16 * gb, 8 * gb)  # no container files: the machine's
    used.write_text(f"{gb}\n")
    for text, want in (("max\n", (16 * gb, 8 * gb)), (f"{4 * gb}\n", (4 * gb, 3 * gb)), (f"{9 * gb}\n", (9 * gb, 8 * gb)),
                       (f"{1 << 62}\n", (16 * gb, 8 * gb))):
        limit.write_text(text)
        assert memory.meminfo() == want, text
    monkeypatch.setattr(memory, "MEMINFO", str(tmp_path / "nonexistent"))
    assert memory.meminfo() is None and memory.room_for(1 << 60)


def test_state_dict_and_training_unchanged(saved):
    _, ours = saved("gpt2")
    runtime.install(ours)
    plain = _plain(ours)
    assert list(ours.state_dict()) == list(plain.state_dict())
    layer = next(m for m in ours.modules() if isinstance(m, runtime.CpuLinear))
    x = torch.randn(1, layer.in_features, requires_grad=True)
    layer.weight.requires_grad_(True)
    y = layer(x)
    y.sum().backward()
    assert x.grad is not None
    assert torch.allclose(y, nn.functional.linear(x, layer.weight, layer.bias))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_kernels(dtype, all_kernels):
    layer = nn.Linear(64, 300).to(dtype)
    assert runtime.install(layer)
    assert isinstance(layer, runtime.CpuLinear)
    x = torch.randn(1, 64).to(dtype)
    with torch.inference_mode():
        expected = nn.functional.linear(x.float(), layer.weight.float(), layer.bias.float())
        for rows in (1, 4):
            with runtime.decode_rows(rows):
                got = layer(x.expand(rows, 64).contiguous()).float()
            assert (got - expected).abs().max().item() < 0.05
    runtime.release(layer)


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("LMATLAS_KERNELS", "0")
    layer = nn.Sequential(nn.Linear(4, 4))
    assert not runtime.install(layer)
    assert type(layer[0]) is nn.Linear


def test_decoding_threads_yield_to_other_processes(monkeypatch, saved):
    _, ours = saved("gpt2")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    chosen: list[int] = []
    real_run = runtime.StepThreads.run

    def run(self, fn):
        self.cores = 2
        return real_run(self, lambda: (chosen.append(torch.get_num_threads()), fn())[1])

    monkeypatch.setattr(runtime.StepThreads, "run", run)
    ids, mask = left_padded_batch()
    try:
        monkeypatch.setattr(threads, "runnable_elsewhere", lambda: 3)  # a busy machine
        ours.generate(ids[:1], mask[:1], max_new_tokens=6)
        assert set(chosen) == {1} and torch.get_num_threads() == 2
        chosen.clear()
        monkeypatch.setattr(threads, "runnable_elsewhere", lambda: 0)  # an idle one
        ours.generate(ids, mask, max_new_tokens=6, num_beams=2)
        assert set(chosen) == {2} and torch.get_num_threads() == 2
        chosen.clear()
        monkeypatch.setenv("LMATLAS_DECODE_THREADS", "1")
        ours.generate(ids[:1], mask[:1], max_new_tokens=6)
        assert set(chosen) == {1} and torch.get_num_threads() == 2
        chosen.clear()
        monkeypatch.delenv("LMATLAS_DECODE_THREADS")
        monkeypatch.setattr(threads, "runnable_elsewhere", lambda: None)  # no /proc: timed trials
        ours.generate(ids[:1], mask[:1], max_new_tokens=8)
        assert chosen[:4] == [2, 1, 2, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
