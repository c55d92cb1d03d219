"""The Decision Transformer's training: offline trajectories, windows of ``context`` steps, and
the cross-entropy of each step's action predicted from its state's token (the actions are
discrete), conditioned on the return-to-go.

``behaviour_cloning=True`` trains the same model with every return-to-go set to zero: it can only
imitate the data's average behaviour, the baseline the paper compares with. With ``env`` set,
each evaluation also plays the environment conditioned on each of ``targets`` and logs the
returns reached.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..control import ENVIRONMENTS, evaluate_returns, read_trajectories, returns_to_go
from ..model import LmatlasModel
from .config import TrainConfig
from .distributed import Context
from .fields import FieldError
from .tasks.base import ModelTask

PathLike = str | os.PathLike
SETTINGS_FILE = "trajectory.json"  # what a rollout needs beside config.json


@dataclass(frozen=True)
class DecisionTransformerRecipe:
    """``data``: JSONL files of trajectories (``lmatlas.control``); ``context``: steps per
    window; ``return_scale`` divides returns-to-go (keep them near 1); the size fields build
    the GPT-2 inside."""

    data: Sequence[PathLike]
    context: int = 10
    hidden_size: int = 64
    num_layers: int = 3
    num_heads: int = 1
    dropout: float = 0.1
    return_scale: float = 1.0
    behaviour_cloning: bool = False
    val_fraction: float = 0.1
    env: str | None = None
    targets: Sequence[float] = ()

    objective = "decision-transformer"

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, os.PathLike)) or not self.data:
            raise FieldError(lambda f: f"{f('data')} must be a list of one or more JSONL files")
        if self.context < 1:
            raise FieldError(lambda f: f"{f('context')} must be at least 1, not {self.context}")
        if self.return_scale <= 0:
            raise FieldError(lambda f: f"{f('return_scale')} must be positive, not {self.return_scale}")
        if self.env is not None and self.env not in ENVIRONMENTS:
            raise FieldError(lambda f: f"{f('env')} must be one of {', '.join(ENVIRONMENTS)}, not {self.env!r}")
        if not 0 <= self.val_fraction < 1:
            raise FieldError(lambda f: f"{f('val_fraction')} must be between 0 and 1, not {self.val_fraction}")

    def task(self, config: TrainConfig, ctx: Context) -> tuple["TrajectoryTask", TrainConfig]:
        trajectories = [t for path in self.data for t in read_trajectories(path)]
        dims = {t["states"].shape[1] for t in trajectories}
        if len(dims) > 1:
            raise FieldError(lambda f: f"the trajectories of {f('data')} have states of different widths: {sorted(dims)}")
        n_val = int(len(trajectories) * self.val_fraction)
        model = LmatlasModel(self.model_config(trajectories), "base")
        return TrajectoryTask(self, model, trajectories[n_val:], trajectories[:n_val]), config

    def model_config(self, trajectories: list[dict[str, np.ndarray]]):
        from ..presets import preset_for

        hf = {
            "model_type": "decision_transformer", "state_dim": int(trajectories[0]["states"].shape[1]),
            "act_dim": int(max(t["actions"].max() for t in trajectories)) + 1,
            "max_ep_len": int(max(len(t["actions"]) for t in trajectories)) + 1, "hidden_size": self.hidden_size,
            "n_layer": self.num_layers, "n_head": self.num_heads, "n_positions": 3 * self.context,
            "action_tanh": False, "vocab_size": 1, "activation_function": "relu", "resid_pdrop": self.dropout,
            "embd_pdrop": self.dropout, "attn_pdrop": self.dropout,
        }  # fmt: skip
        return preset_for("decision_transformer").config(hf, "base")


class TrajectoryTask(ModelTask):
    name = "decision-transformer"

    def __init__(self, recipe: DecisionTransformerRecipe, model: LmatlasModel, train: list, val: list):
        super().__init__(model, None)
        self.recipe = recipe
        self.train_set, self.val_set = train, val
        self.generator = torch.Generator().manual_seed(0)
        # Windows are drawn in proportion to the steps a trajectory has.
        lengths = torch.tensor([len(t["actions"]) for t in train], dtype=torch.float)
        self.draw_weights = lengths / lengths.sum()
        self.act_dim = model.config.action_dim

    def window(self, traj: dict[str, np.ndarray], end: int) -> dict[str, torch.Tensor]:
        """The ``context`` steps up to ``end`` (exclusive), left-padded to ``context``."""
        k = self.recipe.context
        start = max(0, end - k)
        n, pad = end - start, k - (end - start)
        rtg = returns_to_go(traj["rewards"])[start:end] / self.recipe.return_scale
        if self.recipe.behaviour_cloning:
            rtg = np.zeros_like(rtg)
        actions = traj["actions"][start:end]
        return {
            "states": F.pad(torch.from_numpy(traj["states"][start:end]), (0, 0, pad, 0)),
            "actions": F.pad(F.one_hot(torch.from_numpy(actions), self.act_dim).float(), (0, 0, pad, 0)),
            "returns_to_go": F.pad(torch.from_numpy(rtg)[:, None], (0, 0, pad, 0)),
            "timesteps": F.pad(torch.arange(start, end), (pad, 0)),
            "attention_mask": F.pad(torch.ones(n, dtype=torch.long), (pad, 0)),
            "labels": F.pad(torch.from_numpy(actions), (pad, 0), value=-100),
        }

    @staticmethod
    def collate(windows: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        batch: dict[str, Any] = {k: torch.stack([w[k] for w in windows]) for k in windows[0]}
        batch["counts"] = {"loss": int((batch["labels"] != -100).sum())}
        return batch

    def next_batch(self, batch_size: int, ctx: Context) -> dict[str, Any]:
        picks = torch.multinomial(self.draw_weights, batch_size, replacement=True, generator=self.generator)
        windows = []
        for i in picks.tolist():
            traj = self.train_set[i]
            end = int(torch.randint(1, len(traj["actions"]) + 1, (1,), generator=self.generator))
            windows.append(self.window(traj, end))
        return self.collate(windows)

    def loss_terms(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        inputs = {k: batch[k] for k in ("states", "actions", "returns_to_go", "timesteps", "attention_mask")}
        logits = module(**inputs)["action_preds"]
        return {"loss": F.cross_entropy(logits.reshape(-1, self.act_dim), batch["labels"].reshape(-1),
                                        ignore_index=-100, reduction="sum")}  # fmt: skip

    def tokens(self, batch: dict[str, Any]) -> int:
        return int(batch["attention_mask"].sum()) * 3

    @torch.no_grad()
    def evaluate(self, module: nn.Module, ctx: Context) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.val_set:
            windows = [self.window(t, end) for t in self.val_set for end in range(1, len(t["actions"]) + 1)]
            was = module.training
            module.eval()
            total = correct = count = 0.0
            for i in range(0, len(windows), 256):
                batch = self.collate(windows[i : i + 256])
                batch = {k: v.to(ctx.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                total += float(self.loss_terms(module, batch)["loss"])
                logits = module(**{k: batch[k] for k in ("states", "actions", "returns_to_go", "timesteps",
                                                          "attention_mask")})["action_preds"]  # fmt: skip
                real = batch["labels"] != -100
                correct += float((logits.argmax(-1)[real] == batch["labels"][real]).sum())
                count += float(real.sum())
            module.train(was)
            out = {"loss": total / max(count, 1), "action_accuracy": correct / max(count, 1)}
        if self.recipe.env is not None and ctx.main:
            targets = [None] if self.recipe.behaviour_cloning else list(self.recipe.targets)
            env = ENVIRONMENTS[self.recipe.env]()
            returns = evaluate_returns(module, env, targets, self.recipe.context, self.recipe.return_scale)
            out |= {f"return ({name})": value for name, value in returns.items()}
        return out

    def save(self, module: nn.Module, folder: Path) -> None:
        super().save(module, folder)
        settings = {"context": self.recipe.context, "return_scale": self.recipe.return_scale,
                    "behaviour_cloning": self.recipe.behaviour_cloning}  # fmt: skip
        (Path(folder) / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


__all__ = ["DecisionTransformerRecipe", "SETTINGS_FILE", "TrajectoryTask"]
