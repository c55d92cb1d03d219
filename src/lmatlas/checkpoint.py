"""Finding, reading and checking checkpoint files (the Hugging Face folder layout).

Files from outside are never trusted: safetensors first, ``.bin`` only through
``torch.load(weights_only=True)``, and every problem is one sentence naming the file.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .errors import LmatlasError
from .files import read_json

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"

# What a model folder needs from the hub: everything but other frameworks' weights.
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "*/*.json", "*.jinja"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def resolve(path_or_id: str | os.PathLike, weights: bool = True) -> Path:
    """A local model folder for a path, or for a hub id (downloaded once into the HF cache).

    The hub is reached through ``huggingface_hub``, which honours ``HF_HUB_OFFLINE=1``: then
    only ids already in the local cache resolve. ``weights=False`` fetches everything but the
    weights (enough for a tokenizer).
    """
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    if path.exists():
        raise LmatlasError(f"{text}: not a folder; give the model's folder (with config.json), not a file")
    if not _HUB_ID.match(text) or text.startswith(".") or os.sep in text.replace("/", "", 1):
        raise LmatlasError(f"{text}: no such folder, and not a Hugging Face hub id")
    return _download(text, weights)


def resolve_file(path_or_id: str | os.PathLike, filename: str) -> Path:
    """One named file of a local folder or of a hub repository (downloaded once into the HF
    cache, only that file): a GGUF repository holds several quantizations of one model."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        if not (path / filename).is_file():
            raise LmatlasError(f"{path}: no file {filename} in this folder")
        return path / filename
    text = str(path_or_id)
    if path.exists() or not _HUB_ID.match(text) or text.startswith("."):
        raise LmatlasError(f"{text}: not a folder, and not a Hugging Face hub id to take {filename} from")
    from huggingface_hub import hf_hub_download

    return _from_hub(text, lambda: Path(hf_hub_download(text, filename)), filename)


def _download(repo_id: str, weights: bool = True) -> Path:
    from huggingface_hub import snapshot_download

    def fetch() -> Path:
        patterns = _HUB_PATTERNS if weights else [p for p in _HUB_PATTERNS if p != "*.safetensors"]
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
        if weights and not _weight_files_present(folder) and not (folder / "modules.json").exists():
            # Older repos carry only PyTorch pickles; read later with weights_only=True.
            folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS + ["*.bin"]))
        return folder

    return _from_hub(repo_id, fetch)


def _from_hub(repo_id: str, fetch, filename: str | None = None) -> Path:
    """``fetch()``, with the hub's failures as one sentence each."""
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
    )  # fmt: skip

    try:
        return fetch()
    except LocalEntryNotFoundError:
        raise LmatlasError(
            f"{repo_id}: not a local folder, and not in the Hugging Face cache while offline "
            "(HF_HUB_OFFLINE is set or the hub cannot be reached)"
        ) from None
    except RepositoryNotFoundError:
        raise LmatlasError(f"{repo_id}: no such model on the Hugging Face hub (or it is private)") from None
    except EntryNotFoundError:
        raise LmatlasError(f"{repo_id}: the Hugging Face hub repository has no file {filename}") from None
    except HfHubHTTPError as e:
        raise LmatlasError(f"{repo_id}: download from the Hugging Face hub failed: {e}") from None


def _weight_files_present(folder: Path) -> bool:
    return any((folder / f).exists() for f in (SAFETENSORS, SAFETENSORS_INDEX, PYTORCH, PYTORCH_INDEX))


def weight_files(folder: Path) -> list[Path]:
    """The files holding a checkpoint's weights: one, or the shards its index names."""
    f = folder
    if (f / SAFETENSORS).exists():
        return [f / SAFETENSORS]
    for index in (SAFETENSORS_INDEX, PYTORCH_INDEX):
        if (f / index).exists():
            weight_map = read_json(f / index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise LmatlasError(f"{f / index}: no weight_map in the shard index")
            shards = sorted({f / s for s in weight_map.values()})
            missing = [s.name for s in shards if not s.exists()]
            if missing:
                raise LmatlasError(f"{f / index}: shard {missing[0]} is missing from {f}")
            return shards
    if (f / PYTORCH).exists():
        return [f / PYTORCH]
    raise LmatlasError(f"{f}: no weights ({SAFETENSORS}, {PYTORCH} or a sharded index)")


def read_config(folder: Path) -> dict:
    file = folder / "config.json"
    if not file.exists():
        raise LmatlasError(f"{folder}: no config.json, so this is not a model folder")
    return read_json(file)


# Old TensorFlow-converted checkpoints name LayerNorm parameters gamma and beta.
_LEGACY = [(re.compile(r"\.gamma$"), ".weight"), (re.compile(r"\.beta$"), ".bias")]


def _canonical(name: str) -> str:
    for pattern, repl in _LEGACY:
        name = pattern.sub(repl, name)
    return name


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # terminal colour codes


def _load_bin(file: Path) -> object:
    """A PyTorch pickle read with ``weights_only=True``: tensors and plain containers, no code."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        # PyTorch's message is a page of advice (with terminal escapes) on turning the check off:
        # keep only what the file holds.
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(file)
        except Exception:  # unreadable further on: fall back to the unpickler's own reason
            found = []
        if not found:
            reason = re.search(r"WeightsUnpickler error: ([^\n]*)", str(e))
            reason = _ANSI.sub("", reason.group(1)) if reason else "its pickle was refused"
            raise LmatlasError(f"{file}: not a readable PyTorch weights file ({reason})") from None
        raise LmatlasError(
            f"{file}: holds pickled objects other than tensors ({', '.join(found)}), which lmatlas does not load"
        ) from None
    except Exception as e:  # zip and storage errors have no common base
        raise LmatlasError(f"{file}: not a readable PyTorch weights file ({e})") from None


@dataclass(frozen=True)
class StoredBlocks:
    """A matrix as a checkpoint stores it in one of llama.cpp's block formats: ``data`` (rows,
    row bytes) uint8, its format ``kind`` (a ``runtime.quant_formats.QuantType``), its (rows,
    columns) ``shape``, and ``rearrange``, the moves ``get`` applies to the values (or None)."""

    data: Any
    kind: Any
    shape: tuple[int, ...]
    rearrange: Callable | None


class Weights:
    """The tensors of a checkpoint, by name, read lazily from one or several files."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._where: dict[str, tuple[Path, str]] = {}
        self._open: dict[Path, object] = {}
        for file in self._files():
            for stored in self._names(file):
                self._where[_canonical(stored)] = (file, stored)

    def _files(self) -> list[Path]:
        return weight_files(self.folder)

    def rename(self, fn: Callable[[str], str]) -> None:
        """Know each stored tensor by ``fn(name)`` (a layout another release of transformers
        writes, read under the names the weight maps use)."""
        self._where = {fn(name): where for name, where in self._where.items()}

    def _handle(self, file: Path):
        if file not in self._open:
            if file.suffix == ".safetensors":
                from safetensors import SafetensorError, safe_open

                try:
                    self._open[file] = safe_open(str(file), framework="pt")
                except (SafetensorError, OSError) as e:
                    raise LmatlasError(f"{file}: not a readable safetensors file ({e})") from None
            else:
                state = _load_bin(file)
                if not isinstance(state, dict):
                    raise LmatlasError(f"{file}: expected a dict of tensors, found {type(state).__name__}")
                self._open[file] = state
        return self._open[file]

    def _names(self, file: Path) -> Iterator[str]:
        handle = self._handle(file)
        return iter(handle.keys())

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def keys(self) -> list[str]:
        return list(self._where)

    def file_of(self, name: str) -> Path:
        return self._where[name][0]

    def same(self, a: str, b: str) -> bool:
        """Whether two stored names hold the same values (one tensor under two names, or a copy)."""
        if a == b:
            return True
        x, y = self.get(a), self.get(b)
        return x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)

    def get(self, name: str) -> torch.Tensor:
        file, stored = self._where[name]
        handle = self._handle(file)
        try:
            if isinstance(handle, dict):
                tensor = handle[stored]
            else:
                tensor = handle.get_tensor(stored)
        except Exception as e:
            raise LmatlasError(f"{file}: tensor {stored} cannot be read ({e})") from None
        if not isinstance(tensor, torch.Tensor):
            raise LmatlasError(f"{file}: entry {stored} is not a tensor")
        return tensor

    def blocks(self, name: str) -> StoredBlocks | None:
        """The tensor ``name`` in a block format the runtime multiplies as it is, or None (a
        GGUF file's quantized matrices; ``get`` gives every tensor dequantized)."""
        return None

    def shapes(self) -> dict[str, tuple[tuple[int, ...], object]]:
        """name -> (shape, identity), from the safetensors headers or the memory-mapped ``.bin``,
        without reading any values. Two names share an identity when they share storage (tied
        weights saved by ``torch.save``); otherwise identities are unique."""
        out: dict[str, tuple[tuple[int, ...], object]] = {}
        for name, (file, stored) in self._where.items():
            handle = self._handle(file)
            if not isinstance(handle, dict):
                out[name] = (tuple(handle.get_slice(stored).get_shape()), (file, stored))
            elif isinstance(t := handle[stored], torch.Tensor):
                ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
                out[name] = (tuple(t.shape), ident)
        return out
