"""The Decision Transformer's loop: trajectories from the numpy grid world, `lmatlas train
decision-transformer` (and its behaviour-cloning baseline), rollouts conditioned on a target
return, and bad trajectory files. The returns it reaches are a benchmark
(benchmarks/decision_transformer_gridworld.py), not a test: training to them takes minutes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lmatlas
from lmatlas.cli import main
from lmatlas.control import GridWorld, collect, evaluate_returns, read_trajectories, returns_to_go, write_trajectories
from lmatlas.errors import LmatlasError

from .reference import transformers


def test_grid_world_and_its_data(tmp_path):
    env = GridWorld()
    data = collect(env, 40, seed=1)
    assert {sum(t["rewards"]) for t in data} <= {0.0, 1.0, 2.0, 3.0}
    assert all(len(t["states"]) <= env.horizon for t in data)
    back = read_trajectories(write_trajectories(data, tmp_path / "t.jsonl"))
    assert len(back) == 40 and back[0]["states"].shape[1] == env.state_dim
    assert returns_to_go(np.array([0.0, 1.0, 2.0])).tolist() == [3.0, 3.0, 2.0]


@pytest.mark.parametrize("baseline", [False, True])
def test_train_cli_and_rollouts(baseline, tmp_path, capsys):
    path = write_trajectories(collect(GridWorld(), 30, seed=2), tmp_path / "grid.jsonl")
    out = tmp_path / "run"
    args = ["train", "decision-transformer", "--data", str(path), "--out", str(out), "--steps", "3",
            "--batch-size", "8", "--dim", "16", "--layers", "1", "--heads", "2", "--context", "4",
            "--env", "gridworld", "--targets", "1,3", "--no-progress", "--val-fraction", "0.2"]  # fmt: skip
    assert main(args + (["--behaviour-cloning"] if baseline else [])) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3
    dev = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][-1]
    expected = ["return (bc)"] if baseline else ["return (target 1)", "return (target 3)"]
    assert [k for k in dev if k.startswith("return")] == expected and "action_accuracy" in dev
    settings = json.loads((out / "model" / "trajectory.json").read_text())
    assert settings == {"context": 4, "return_scale": 1.0, "behaviour_cloning": baseline}
    # The saved model is transformers' DecisionTransformerModel, and plays the environment.
    ours = lmatlas.load(out / "model")
    ref = transformers().DecisionTransformerModel.from_pretrained(out / "model").eval()
    gen = torch.Generator().manual_seed(0)
    inputs = dict(states=torch.randn(2, 4, 25, generator=gen), actions=torch.zeros(2, 4, 4),
                  returns_to_go=torch.ones(2, 4, 1), timesteps=torch.arange(4).expand(2, 4))  # fmt: skip
    with torch.no_grad():
        assert (ours(**inputs)["action_preds"] - ref(**inputs).action_preds).abs().max().item() <= 1e-4
    returns = evaluate_returns(ours, GridWorld(), [None if baseline else 3.0], context=4)
    assert all(v in (0.0, 1.0, 2.0, 3.0) for v in returns.values())


def test_bad_trajectories(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"states": [[0.0], [1.0]], "actions": [0], "rewards": [0.0, 1.0]}) + "\n")
    with pytest.raises(LmatlasError, match="trajectory 1: states, actions and rewards must have the same number"):
        read_trajectories(bad)
    bad.write_text(json.dumps({"states": [[0.0]], "actions": [0.5], "rewards": [1.0]}) + "\n")
    with pytest.raises(LmatlasError, match="actions must be integers from 0"):
        read_trajectories(bad)
    assert main(["train", "decision-transformer", "--data", str(bad), "--out", str(tmp_path / "o"),
                 "--model", "gpt2"]) == 1  # fmt: skip
    assert "builds its model from the trajectories" in capsys.readouterr().err
    assert main(["train", "decision-transformer", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 1
    assert "none.jsonl: no such file" in capsys.readouterr().err
    assert main(["train", "masked-lm", "--data", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "masked-lm needs --model" in capsys.readouterr().err
