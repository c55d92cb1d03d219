"""CLIP's contrastive objective (Radford et al., 2021): in a batch of images and their captions,
each image's caption is the right answer among the batch's captions, and each caption's image
among its images — a cross-entropy both ways over the scaled cosine similarities.

The data is JSON Lines of ``{"image": path, "text": caption}``, a path relative to the file's
folder. Training continues a CLIP folder (its tokenizer and image processor are saved with it);
evaluation reports the loss and how often a caption finds its own image first among the
held-out images (``top1``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LmatlasError
from ..files import read_jsonl
from .config import TrainConfig
from .distributed import Context
from .fields import FieldError
from .tasks.base import ModelTask

PathLike = str | os.PathLike


@dataclass(frozen=True)
class ContrastiveRecipe:
    """``model``: a CLIP folder or hub id; ``data``: JSONL files of image-caption pairs."""

    model: PathLike
    data: Sequence[PathLike]
    val_fraction: float = 0.1

    objective = "clip"

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, os.PathLike)) or not self.data:
            raise FieldError(lambda f: f"{f('data')} must be a list of one or more JSONL files")
        if not 0 <= self.val_fraction < 1:
            raise FieldError(lambda f: f"{f('val_fraction')} must be between 0 and 1, not {self.val_fraction}")

    def task(self, config: TrainConfig, ctx: Context) -> tuple["ContrastiveTask", TrainConfig]:
        from ..checkpoint import resolve
        from ..images import ImageProcessor
        from ..loader import load
        from ..tokenizer import load_tokenizer

        folder = resolve(self.model)
        model = load(folder)
        if not model.is_dual_encoder:
            raise FieldError(lambda f: f"{f('model')} {self.model} is not a CLIP model (model_type "
                                       f"{model.config.model_type}); the contrastive objective trains one")
        processor = ImageProcessor.from_pretrained(folder)
        pairs = [pair for path in self.data for pair in read_pairs(path)]
        if len(pairs) < 2:
            raise FieldError(lambda f: f"{f('data')} holds {len(pairs)} pair(s); a contrastive batch needs two or more")
        pixels = processor([p[0] for p in pairs])  # small data: every image processed once
        texts = [p[1] for p in pairs]
        n_val = int(len(pairs) * self.val_fraction)
        task = ContrastiveTask(model.train(), folder, load_tokenizer(folder), pixels, texts, n_val)
        return task, config


def read_pairs(path: PathLike) -> list[tuple[Path, str]]:
    """(image file, caption) of each line of a JSONL file; images relative to its folder."""
    base = Path(path).parent
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(row.get("text"), str):
            raise LmatlasError(f"{path}: line {i} must be an object with an image path and a text")
        out.append((base / row["image"], row["text"]))
    return out


class ContrastiveTask(ModelTask):
    name = "clip"

    def __init__(self, model, folder: Path, tokenizer, pixels: torch.Tensor, texts: list[str], n_val: int):
        super().__init__(model, folder)
        self.folder = folder
        self.tokenizer = tokenizer
        self.pixels, self.texts = pixels[n_val:], texts[n_val:]
        self.val_pixels, self.val_texts = pixels[:n_val], texts[:n_val]
        self.generator = torch.Generator().manual_seed(0)

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        limit = self.module.config.max_positions
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=limit)
        return {"input_ids": torch.tensor(enc["input_ids"]), "attention_mask": torch.tensor(enc["attention_mask"])}

    def next_batch(self, batch_size: int, ctx: Context) -> dict[str, Any]:
        # Distinct captions: a caption repeated in the batch would be a right answer marked wrong.
        picks, seen = [], set()
        for i in torch.randperm(len(self.texts), generator=self.generator).tolist():
            if self.texts[i] not in seen and len(picks) < batch_size:
                picks.append(i)
                seen.add(self.texts[i])
        n = len(picks)
        batch: dict[str, Any] = {"pixel_values": self.pixels[picks], **self.encode([self.texts[i] for i in picks])}
        batch["counts"] = {"loss": 2 * n}
        return batch

    def loss_terms(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"])  # fmt: skip
        logits = out["logits_per_image"]
        target = torch.arange(logits.shape[0], device=logits.device)
        both = F.cross_entropy(logits, target, reduction="sum") + F.cross_entropy(logits.t(), target, reduction="sum")
        return {"loss": both}

    def tokens(self, batch: dict[str, Any]) -> int:
        return int(batch["attention_mask"].sum())

    @torch.no_grad()
    def evaluate(self, module: nn.Module, ctx: Context) -> dict[str, float]:
        if len(self.val_texts) < 2:
            return {}
        was = module.training
        module.eval()
        batch = {"pixel_values": self.val_pixels.to(ctx.device),
                 **{k: v.to(ctx.device) for k, v in self.encode(self.val_texts).items()}}  # fmt: skip
        loss = float(self.loss_terms(module, batch)["loss"]) / (2 * len(self.val_texts))
        logits = module(**batch)["logits_per_text"]
        top1 = float((logits.argmax(-1) == torch.arange(len(self.val_texts), device=logits.device)).float().mean())
        module.train(was)
        return {"loss": loss, "top1": top1}

    def save(self, module: nn.Module, folder: Path) -> None:
        super().save(module, folder)  # weights, config.json, tokenizer files
        shutil.copyfile(self.folder / "preprocessor_config.json", Path(folder) / "preprocessor_config.json")

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


__all__ = ["ContrastiveRecipe", "ContrastiveTask", "read_pairs"]
