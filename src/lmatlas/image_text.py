"""Texts and images in one space, with a CLIP model: what text-to-image search reads.

``ImageTextEncoder(folder)`` embeds images with CLIP's image tower and texts with its text tower,
each projected and normalised, so that a text and the images it describes have the highest dot
products. ``encode`` takes texts, as ``embeddings.SentenceEncoder.encode`` does, so an index of
images can be queried with sentences.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .checkpoint import resolve
from .errors import LmatlasError
from .images import ImageProcessor, load_image


class ImageTextEncoder:
    """A CLIP folder (or hub id): ``encode_images(images)`` and ``encode(texts)``, each an
    (n, dim) float32 array of unit vectors."""

    def __init__(self, model: str | os.PathLike, dtype: str | torch.dtype | None = None):
        from .loader import load
        from .tokenizer import load_tokenizer

        self.folder = resolve(model)
        self.model = load(self.folder, dtype=dtype)
        if not self.model.is_dual_encoder:
            raise LmatlasError(f"{model}: not a CLIP model (model_type {self.model.config.model_type}); "
                               "searching images by text needs one, such as openai/clip-vit-base-patch32")
        self.tokenizer = load_tokenizer(self.folder)
        self.processor = ImageProcessor.from_pretrained(self.folder)
        self.max_seq_length = self.model.config.max_positions

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Any], batch_size: int = 16) -> np.ndarray:
        """Image files or PIL images -> unit vectors; files are read as ``images.load_image``."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = [load_image(image) for image in images[start : start + batch_size]]
            pixels = self.processor(batch).to(self.model.dtype)
            out.append(torch.nn.functional.normalize(self.model.backbone.image_features(pixels).float(), dim=-1))
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), dtype=np.float32)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]

    @torch.inference_mode()
    def encode(self, texts: str | Iterable[str], batch_size: int = 32, normalize: bool | None = None,
               truncate: bool = True, progress: bool = False) -> np.ndarray:  # fmt: skip
        """Texts -> unit vectors in the images' space (``normalize`` and ``progress`` are taken
        for the interface of ``SentenceEncoder``: always unit vectors, no bar); texts longer
        than the model's positions are cut, or refused with ``truncate=False``."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = []
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            enc = self.tokenizer(batch, padding=True, truncation=truncate, max_length=self.max_seq_length)
            ids = torch.tensor(enc["input_ids"])
            if ids.shape[1] > self.max_seq_length:
                raise LmatlasError(f"a text has {ids.shape[1]} tokens, more than the model's {self.max_seq_length}")
            features = self.model.backbone.text_features(ids, torch.tensor(enc["attention_mask"]))
            out.append(torch.nn.functional.normalize(features.float(), dim=-1))
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), dtype=np.float32)


__all__ = ["ImageTextEncoder"]
