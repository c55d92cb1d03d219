"""Reading a GGUF file: its metadata as plain values, its tensors dequantized to float32 (or, for
the types the runtime multiplies as they are, their blocks), and the checks that make a bad file
one clear sentence."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import StoredBlocks, Weights
from ..errors import LmatlasError
from ..runtime import quant_formats
from ..runtime.quant_formats import BY_ID

MAGIC = b"GGUF"


def find_gguf(path_or_id: str | os.PathLike) -> Path | None:
    """The GGUF file a path names: the file itself (by its ``.gguf`` suffix or its magic bytes),
    or the only ``.gguf`` file of a folder without a ``config.json``. None for anything else."""
    path = Path(path_or_id).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return path
        with open(path, "rb") as f:
            return path if f.read(4) == MAGIC else None
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise LmatlasError(f"{path} holds several GGUF files ({names}); give the path of the one to load")
    return found[0] if found else None


class GGUFMetadata:
    """What the config mapping reads of a GGUF file: ``metadata`` by key, the ``tensors`` by
    name and their ``shape``s (a file read, or one about to be written)."""

    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str, why: str) -> Any:
        if key not in self.metadata:
            raise LmatlasError(f"{self.path}: its metadata has no {key}, which {why} needs")
        return self.metadata[key]

    def shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError


class GGUFFile(GGUFMetadata):
    """One GGUF file, opened (memory-mapped) and checked: ``metadata`` by key, ``tensors`` by name."""

    def __init__(self, path: Path):
        try:
            import gguf
        except ImportError:
            raise LmatlasError(f"{path}: reading GGUF files needs the gguf package: pip install gguf") from None
        self.path = path
        with open(path, "rb") as f:
            if f.read(4) != MAGIC:
                raise LmatlasError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
        try:
            reader = _reader_class(gguf)(path)
            self.metadata: dict[str, Any] = {name: field.contents() for name, field in reader.fields.items()}
            self.tensors = {t.name: t for t in reader.tensors}
            # The reader maps the tensors lazily: one whose bytes run past the end of the file
            # comes back short, which is how a truncated download shows.
            for t in reader.tensors:
                if t.data.nbytes != t.n_bytes:
                    raise ValueError(f"tensor {t.name} holds {t.data.nbytes} of its {t.n_bytes} bytes")
        except LmatlasError:
            raise
        except Exception as e:  # the reader raises ValueError, KeyError, IndexError... on bad bytes
            raise LmatlasError(f"{path}: not a readable GGUF file, truncated or corrupt ({e})") from None
        self._dequantize = gguf.quants.dequantize

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape in PyTorch's order (GGUF lists the dimensions innermost first)."""
        return tuple(int(d) for d in reversed(self.tensors[name].shape))

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor ``name`` as float32 (dequantized if stored in a quantized type): the types
        of blocks of 32 (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) by ``quant_formats.dequantize`` (C where
        built, to the bit what the ``gguf`` package gives, and about 30 times faster than its
        NumPy: SmolLM2's table of token embeddings took 0.6 s), the other types by ``gguf``."""
        t = self.tensors[name]
        kind = BY_ID.get(int(t.tensor_type))
        if kind is not None and kind.block == quant_formats.BLOCK and len(t.shape) == 2:
            blocks = self.blocks(name)[0]
            return quant_formats.dequantize(blocks, kind).reshape(self.shape(name))
        try:
            values = self._dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise LmatlasError(
                f"{self.path}: tensor {name} is stored as {t.tensor_type.name}, which gguf cannot dequantize"
            ) from None
        values = np.asarray(values, dtype=np.float32).reshape(self.shape(name))
        return torch.from_numpy(values.copy())

    def blocks(self, name: str) -> tuple[torch.Tensor, object] | None:
        """A matrix stored in a block format the runtime multiplies as it is (Q8_0, Q4_0, Q4_1,
        Q5_0, Q5_1, Q4_K, Q5_K, Q6_K): its (rows, row bytes) blocks, copied from the file, and the
        format; None otherwise."""
        t = self.tensors[name]
        kind = BY_ID.get(int(t.tensor_type))
        if kind is None or len(t.shape) != 2:
            return None
        rows, columns = self.shape(name)
        raw = np.asarray(t.data, dtype=np.uint8).reshape(rows, kind.row_bytes(columns))
        return torch.from_numpy(raw.copy()), kind


@functools.lru_cache(maxsize=1)
def _reader_class(gguf):
    class Reader(gguf.GGUFReader):
        """gguf's reader over a plain NumPy view of its memory map. It reads the metadata in
        small slices, two per string, and a slice of an ``np.memmap`` costs several times a plain
        array's (its ``__array_finalize__``): SmolLM2's 49,152 tokens and 48,900 merges took
        1.9 s, 0.6 s this way. The view keeps the map open (the map is its base)."""

        @property
        def data(self) -> np.ndarray:
            return self._data

        @data.setter
        def data(self, value: np.ndarray) -> None:
            self._data = value.view(np.ndarray)

    return Reader


def open_gguf(path: Path) -> GGUFFile:
    """The file at ``path``, parsed once for ``load`` and ``load_tokenizer`` alike (a tokenizer's
    tens of thousands of tokens and merges take seconds to parse): the same file, unchanged
    since, is not read again."""
    stat = os.stat(path)
    return _opened(Path(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _opened(path: Path, mtime_ns: int, size: int) -> GGUFFile:
    return GGUFFile(path)


# A rearrangement of a stored tensor back into transformers' layout: fn(tensor, metadata).
Rearrange = Callable[[torch.Tensor, dict], torch.Tensor]


class GGUFWeights(Weights):
    """A GGUF file's tensors under transformers' names, for the loader's one state-loading path:
    each is dequantized (and rearranged where llama.cpp's converter changed its layout) when read."""

    def __init__(self, file: GGUFFile, names: dict[str, tuple[str, Rearrange | None]]):
        # names: transformers' name -> (the GGUF tensor's name, its rearrangement)
        self.folder = file.path
        self.file = file
        self._names_map = names
        self._where = {ours: (file.path, theirs) for ours, (theirs, _) in names.items()}
        self._open = {}

    def get(self, name: str) -> torch.Tensor:
        stored, rearrange = self._names_map[name]
        tensor = self.file.tensor(stored)
        return tensor if rearrange is None else rearrange(tensor, self.file.metadata)

    def shapes(self) -> dict[str, tuple[tuple[int, ...], object]]:
        return {ours: (self.file.shape(stored), stored) for ours, (stored, _) in self._names_map.items()}

    def blocks(self, name: str) -> StoredBlocks | None:
        stored, rearrange = self._names_map[name]
        found = self.file.blocks(stored)
        if found is None:
            return None
        data, kind = found
        metadata = self.file.metadata
        moves = None if rearrange is None else lambda t: rearrange(t, metadata)
        return StoredBlocks(data, kind, self.file.shape(stored), moves)
