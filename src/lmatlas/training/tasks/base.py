"""What every pretraining task shares: one ``LmatlasModel`` saved with its tokenizer, its
weights reloaded from a checkpoint, and the per-token mean of a summed loss."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...model import LmatlasModel
from ..data import rank_slice
from ..distributed import Context
from ..trainer import Task

EVAL_BATCH = 64


class ModelTask(Task):
    """A task training one ``LmatlasModel`` saved with its tokenizer."""

    def __init__(self, model: LmatlasModel, tokenizer_dir: str | os.PathLike | None):
        self.module = model
        self.tokenizer_dir = tokenizer_dir

    def save(self, module: nn.Module, folder: Path) -> None:
        from ...save import save_model

        save_model(module, folder, self.tokenizer_dir)

    def load(self, folder: Path) -> None:
        load_weights(self.module, folder)

    def signature(self) -> dict[str, Any]:
        return {"head": self.module.head_name, **model_signature(self.module)}


def model_signature(model: LmatlasModel) -> dict[str, Any]:
    """The saved config.json of ``model`` without its labels and provenance: what a checkpoint's
    model must match to be resumed."""
    from ...save import hf_config

    skip = {"architectures", "torch_dtype", "transformers_version", "id2label", "label2id"}
    return {k: v for k, v in hf_config(model.config, model.head_name).items() if k not in skip}


def load_weights(model: LmatlasModel, folder: Path) -> None:
    """Copy the weights of the Hugging Face folder ``folder`` into ``model`` (same shapes)."""
    from ...loader import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = load(folder, head=model.head_name)
    model.load_state_dict(saved.state_dict())


def mean_loss(total: float, count: int) -> dict[str, float]:
    """The loss per predicted token and its perplexity (capped so that exp cannot overflow)."""
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50))}


class DataPosition:
    """The state a checkpoint keeps of a task's (or a batch source's) place in its data:
    ``self.sampler``, and ``self.generator`` when it draws its noise at random."""

    generator: torch.Generator | None = None

    def state_dict(self) -> dict[str, Any]:
        state = {"sampler": self.sampler.state_dict()}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if self.generator is not None:
            self.generator.set_state(state["generator"])


def slice_batch(batch: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
    """This process's rows of a global batch."""
    return {k: rank_slice(v, ctx.rank, ctx.world) for k, v in batch.items()}


__all__ = ["EVAL_BATCH", "DataPosition", "ModelTask", "load_weights", "mean_loss", "model_signature", "slice_batch"]
