"""The Decision Transformer against behaviour cloning on the numpy grid world (``lmatlas.control``):
the returns each reaches, conditioned on three target returns, after training on the same
offline trajectories. Not a timing: a table of returns, with the machine it ran on.

    python benchmarks/decision_transformer_gridworld.py [--steps 400] [--episodes 900]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np

from lmatlas.control import GridWorld, collect, write_trajectories
from lmatlas.training import TrainConfig, train
from lmatlas.training.trajectory import DecisionTransformerRecipe

TARGETS = [1.0, 2.0, 3.0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--episodes", type=int, default=900)
    args = p.parse_args()
    env = GridWorld()
    data = collect(env, args.episodes, seed=0)
    returns = np.array([sum(t["rewards"]) for t in data])
    print(f"data: {len(data)} episodes, returns {dict(zip(*np.unique(returns, return_counts=True)))}")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_trajectories(data, Path(tmp) / "grid.jsonl")
        rows = {}
        for name, bc in (("decision transformer", False), ("behaviour cloning", True)):
            recipe = DecisionTransformerRecipe(data=[path], context=6, hidden_size=32, num_layers=2, num_heads=2,
                                               behaviour_cloning=bc, env="gridworld", targets=TARGETS)
            train(recipe, TrainConfig(out=Path(tmp) / name, steps=args.steps, batch_size=64, lr=1e-3, progress=False,
                                      device="cpu"))
            last = json.loads((Path(tmp) / name / "log.jsonl").read_text().splitlines()[-1])
            rows[name] = {k: v for k, v in last.items() if k.startswith(("return", "action_accuracy"))}
    print(f"machine: {platform.processor() or platform.machine()}")
    for name, row in rows.items():
        print(f"{name:>22}: " + ", ".join(f"{k} {v:g}" for k, v in row.items()))


if __name__ == "__main__":
    main()
