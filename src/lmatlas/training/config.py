"""How to train: ``TrainConfig`` (optimiser, schedule, evaluation, checkpoints), the learning
rate ``Schedule`` and AdamW's parameter groups."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from torch import nn

from .fields import FieldError


@dataclass
class TrainConfig:
    out: str | os.PathLike
    steps: int | None = 1000  # None: from a fine-tuning recipe's epochs
    batch_size: int = 8  # per process and accumulation step
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr: float | None = None  # default: lr / 10 for cosine, 0 for linear
    warmup: int = 0
    schedule: str = "cosine"
    decay_steps: int | None = None  # default: steps
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip: float | None = 1.0
    bf16: bool = False
    eval_every: int = 0  # 0: at the end only
    patience: int | None = None  # evaluations without improvement before stopping
    metric: str | None = None  # default: the task's
    save_every: int = 0  # 0: at the end only
    keep: int = 2  # checkpoints kept
    seed: int = 1337
    device: str | None = None
    fsdp: bool = False
    resume: bool | str = False
    progress: bool = True
    log_every: int = 10  # printed lines when the output is not a terminal
    plot: bool = True  # the loss curve, loss.png (when matplotlib is installed)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FieldError(lambda f, name=name, value=value: f"{f(name)} must be at least 1, not {value}")
        if self.lr <= 0:
            raise FieldError(lambda f: f"{f('lr')} must be positive, not {self.lr}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise FieldError(lambda f: f"{f('schedule')} must be cosine, linear or constant, not {self.schedule!r}")
        if self.warmup < 0 or self.eval_every < 0 or self.save_every < 0:
            raise FieldError(lambda f: f"{f('warmup')}, {f('eval_every')} and {f('save_every')} must not be negative")
        if self.min_lr is None:
            self.min_lr = self.lr / 10 if self.schedule == "cosine" else 0.0 if self.schedule == "linear" else self.lr


class Schedule:
    """Learning rate at each step: linear warmup, then cosine or linear decay to ``min_lr`` at
    ``decay_steps`` (nanoGPT's ``get_lr``), or constant."""

    def __init__(self, cfg: TrainConfig):
        self.lr, self.min_lr, self.warmup = cfg.lr, cfg.min_lr, cfg.warmup
        self.decay = cfg.decay_steps or cfg.steps
        self.kind = cfg.schedule

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return self.lr
        if step > self.decay or self.decay <= self.warmup:
            return self.min_lr
        ratio = (step - self.warmup) / (self.decay - self.warmup)
        if self.kind == "cosine":
            coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
        else:
            coeff = 1.0 - ratio
        return self.min_lr + coeff * (self.lr - self.min_lr)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices (and embeddings) decay, biases and norm weights (1-D) do not."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


__all__ = ["Schedule", "TrainConfig", "param_groups"]
