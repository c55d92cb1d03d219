"""The loss curve of a training run (train and dev) and its dev metric, as a PNG; for learning
from preferences also the rewards, the KL and the margins each step logs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..plots import pyplot

#: Per-step values of preference training, drawn beside the loss when a run logs them.
CURVES = ("reward", "kl", "margin", "accuracy", "chosen_reward", "rejected_reward", "value_loss")


def plot_log(history: list[dict[str, Any]], path: Path, metric: str | None = None) -> None:
    """The loss curve (train and dev) and the dev metric, as a PNG."""
    plt = pyplot("the loss curve")
    train = [(r["step"], r["loss"]) for r in history if r.get("split") == "train" and r.get("loss") is not None]
    dev = [r for r in history if r.get("split") == "dev"]
    if not train:
        return
    extra = metric if metric and metric != "loss" and any(metric in r for r in dev) else None
    curves = [c for c in CURVES if c != extra and any(c in r for r in history if r.get("split") == "train")]
    panels = 1 + bool(extra) + len(curves)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    steps, losses = zip(*train)
    ax.plot(steps, losses, lw=0.6, alpha=0.4, color="C0", label="train (per step)")
    k = max(1, len(losses) // 50)
    if k > 1:
        smooth = [sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(steps, smooth, lw=1.5, color="C0", label=f"train (mean of {k})")
    dev_loss = [(r["step"], r["loss"]) for r in dev if "loss" in r]
    if dev_loss:
        ax.plot(*zip(*dev_loss), "o-", color="C1", label="dev")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if extra:
        ax2 = axes[0][1]
        logged = [(r["step"], r[extra]) for r in history if r.get("split") == "train" and extra in r]
        if logged:  # a preference run logs its dev metric at each training step too
            ax2.plot(*zip(*logged), lw=0.8, color="C3", label="train")
        ax2.plot([r["step"] for r in dev if extra in r], [r[extra] for r in dev if extra in r], "o-", color="C2",
                 label="dev")
        ax2.set_xlabel("step")
        ax2.set_ylabel(extra if logged else f"dev {extra}")
        if logged:
            ax2.legend()
        ax2.grid(alpha=0.3)
    for ax, name in zip(axes[0][1 + bool(extra):], curves):
        points = [(r["step"], r[name]) for r in history if r.get("split") == "train" and name in r]
        ax.plot(*zip(*points), lw=0.8, color="C3", label="train")
        dev_points = [(r["step"], r[name]) for r in dev if name in r]
        if dev_points:
            ax.plot(*zip(*dev_points), "o-", color="C1", label="dev")
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


__all__ = ["plot_log"]
