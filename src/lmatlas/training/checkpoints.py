"""Checkpoint folders of a training run.

A checkpoint is a Hugging Face folder (config.json, safetensors, tokenizer) plus
``trainer_state.pt`` (optimizer, schedule, random generators, data position), written under a
temporary name and renamed, so that a kill at any moment leaves either the previous checkpoint
or the new one, whole.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import LmatlasError

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.pt"


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints in ``out``, oldest first (temporary folders are not complete)."""
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_FILE).is_file():
            try:
                found.append((int(p.name[len(CHECKPOINT_PREFIX):]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


# The layout of the trainer state this code writes and reads.
STATE_FORMAT = 1


def read_state(folder: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint folder (tensors and plain data only)."""
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LmatlasError(f"{folder / STATE_FILE}: not a readable trainer state ({e})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise LmatlasError(f"{folder / STATE_FILE}: a trainer state of format {found!r}, not {STATE_FORMAT}")
    return state


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    try:
        fd = os.open(folder, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def publish(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder into place; an older ``final`` is replaced."""
    _fsync_tree(tmp)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def fresh_tmp(out: Path, name: str) -> Path:
    tmp = out / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def prune(out: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (``keep`` <= 0 keeps them all)."""
    for old in checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


# The random generators, saved as lists and tuples that ``weights_only`` loading accepts.


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": _to_list(random.getstate()),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"])
    random.setstate(_to_tuple(state["python"]))


def _to_list(x):
    if isinstance(x, tuple):
        return [_to_list(v) for v in x]
    return x


def _to_tuple(x):
    if isinstance(x, list):
        return tuple(_to_tuple(v) for v in x)
    return x


__all__ = ["CHECKPOINT_PREFIX", "STATE_FILE", "checkpoint_name", "checkpoints", "fresh_tmp", "prune", "publish",
           "read_state", "rng_state", "set_rng_state"]
