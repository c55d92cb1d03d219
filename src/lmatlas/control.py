"""Control with the Decision Transformer: a small environment in numpy, offline trajectories
from it, and rollouts of a trained model conditioned on the return it is asked to reach.

``GridWorld`` is a square grid: the agent starts in a corner and moves up, down, left or right;
three goals end the episode with different rewards, the nearest worth least and the farthest
most, and an episode that reaches none ends after ``horizon`` steps with nothing. Behaviour
data mixes agents heading for either goal and agents that wander, so a model conditioned on a
return has seen each kind of outcome; behaviour cloning imitates their average instead.

A trajectory is a dict of lists: ``states`` (each a list of numbers), ``actions`` (ints: the
actions are discrete) and ``rewards`` — one JSON object per line in a JSONL file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import LmatlasError
from .files import read_jsonl

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right


@dataclass
class GridWorld:
    """A ``size`` x ``size`` grid from (0, 0); ``goals`` maps cells to the reward that ends the
    episode there. The state is the one-hot of the agent's cell."""

    size: int = 5
    horizon: int = 14
    goals: dict[tuple[int, int], float] = field(default_factory=lambda: {(0, 2): 1.0, (2, 4): 2.0, (4, 4): 3.0})

    @property
    def state_dim(self) -> int:
        return self.size * self.size

    @property
    def action_dim(self) -> int:
        return len(MOVES)

    def reset(self) -> np.ndarray:
        self.cell, self.t = (0, 0), 0
        return self.state()

    def state(self) -> np.ndarray:
        s = np.zeros(self.state_dim, dtype=np.float32)
        s[self.cell[0] * self.size + self.cell[1]] = 1.0
        return s

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        if not 0 <= int(action) < len(MOVES):
            raise LmatlasError(f"action {action} is not one of 0..{len(MOVES) - 1}")
        dr, dc = MOVES[int(action)]
        r, c = self.cell
        self.cell = (min(max(r + dr, 0), self.size - 1), min(max(c + dc, 0), self.size - 1))
        self.t += 1
        reward = self.goals.get(self.cell, 0.0)
        return self.state(), reward, bool(reward) or self.t >= self.horizon

    def toward(self, target: tuple[int, int]) -> int:
        """An action that brings the agent closer to ``target`` (rows first)."""
        (r, c), (tr, tc) = self.cell, target
        if r != tr:
            return 1 if tr > r else 0
        return 3 if tc > c else 2


def collect(env: GridWorld, episodes: int, seed: int = 0, noise: float = 0.3) -> list[dict[str, list]]:
    """Behaviour trajectories: each episode an agent heads for one goal (chosen at random) or
    wanders, taking a random action with probability ``noise``."""
    rng = np.random.default_rng(seed)
    goals = list(env.goals)
    out = []
    for _ in range(episodes):
        intent = int(rng.integers(len(goals) + 1))  # the last one: wander
        state, done = env.reset(), False
        traj: dict[str, list] = {"states": [], "actions": [], "rewards": []}
        while not done:
            if intent == len(goals) or rng.random() < noise:
                action = int(rng.integers(env.action_dim))
            else:
                action = env.toward(goals[intent])
            traj["states"].append(state.tolist())
            traj["actions"].append(action)
            state, reward, done = env.step(action)
            traj["rewards"].append(reward)
        out.append(traj)
    return out


def write_trajectories(trajectories: list[dict[str, list]], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(t) + "\n" for t in trajectories), encoding="utf-8")
    return path


def read_trajectories(path: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """A JSONL file of trajectories, checked: every step has a state of the same width, an
    integer action and a reward."""
    out = []
    width = None
    for i, row in enumerate(read_jsonl(path), 1):
        where = f"{path}: trajectory {i}"
        if not isinstance(row, dict) or not {"states", "actions", "rewards"} <= set(row):
            raise LmatlasError(f"{where} must be an object with states, actions and rewards")
        n = len(row["states"])
        if n == 0 or len(row["actions"]) != n or len(row["rewards"]) != n:
            raise LmatlasError(f"{where}: states, actions and rewards must have the same number of steps (at least 1)")
        try:
            states = np.asarray(row["states"], dtype=np.float32)
            rewards = np.asarray(row["rewards"], dtype=np.float32)
        except (TypeError, ValueError):
            raise LmatlasError(f"{where}: states must be lists of numbers and rewards numbers") from None
        if states.ndim != 2 or (width is not None and states.shape[1] != width):
            raise LmatlasError(f"{where}: every state must be a list of {width or 'the same number of'} numbers")
        width = states.shape[1]
        if not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in row["actions"]):
            raise LmatlasError(f"{where}: actions must be integers from 0 (the actions are discrete)")
        out.append({"states": states, "actions": np.asarray(row["actions"], dtype=np.int64), "rewards": rewards})
    if not out:
        raise LmatlasError(f"{path}: no trajectories")
    return out


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """At each step, the sum of the rewards from there to the end."""
    return np.cumsum(rewards[::-1])[::-1].astype(np.float32).copy()


@torch.inference_mode()
def rollout(model, env: GridWorld, target: float | None, context: int, return_scale: float = 1.0) -> float:
    """One episode acted by ``model`` (an ``LmatlasModel`` of the Decision Transformer),
    conditioned on reaching ``target`` (None: a behaviour-cloning model, whose returns input is
    zero); each step takes the most likely action given the last ``context`` steps, and the
    return still to reach drops by each reward. Returns the episode's return."""
    device = model.device
    states, actions, rtg = [env.reset()], [], [0.0 if target is None else target / return_scale]
    total, done, t = 0.0, False, 0
    while not done:
        k = min(len(states), context)
        s = torch.tensor(np.stack(states[-k:]), device=device)[None]
        a = torch.zeros(1, k, env.action_dim, device=device)
        for j, act in enumerate(actions[-(k - 1):] if k > 1 else []):
            a[0, j, act] = 1.0  # the current step's action is unknown: left at zeros
        r = torch.tensor(rtg[-k:], device=device)[None, :, None]
        steps = torch.arange(t - k + 1, t + 1, device=device)[None]
        logits = model(states=s, actions=a, returns_to_go=r, timesteps=steps)["action_preds"][0, -1]
        action = int(logits.argmax())
        state, reward, done = env.step(action)
        total += reward
        actions.append(action)
        states.append(state)
        rtg.append(0.0 if target is None else rtg[-1] - reward / return_scale)
        t += 1
    return total


def evaluate_returns(model, env: GridWorld, targets: list[float | None], context: int, return_scale: float = 1.0,
                     episodes: int = 1) -> dict[str, float]:  # fmt: skip
    """The mean return reached for each target (the environment is deterministic: one episode
    tells, unless the model samples)."""
    was_training = model.training
    model.eval()
    out = {}
    for target in targets:
        returns = [rollout(model, env, target, context, return_scale) for _ in range(episodes)]
        out["bc" if target is None else f"target {target:g}"] = float(np.mean(returns))
    model.train(was_training)
    return out


ENVIRONMENTS: dict[str, Any] = {"gridworld": GridWorld}


__all__ = ["ENVIRONMENTS", "GridWorld", "collect", "evaluate_returns", "read_trajectories", "returns_to_go",
           "rollout", "write_trajectories"]  # fmt: skip
