"""The Decision Transformer against transformers' DecisionTransformerModel, on a checkpoint it
writes with random weights: odd state and action sizes, left-padded trajectories."""

from __future__ import annotations

import pytest
import torch

import lmatlas

from .reference import randomize, save_reference, transformers

TOL = 1e-4
STATE, ACT = 5, 3


def trajectories(b: int = 3, t: int = 7, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(b, t, STATE, generator=gen)
    actions = torch.randn(b, t, ACT, generator=gen).tanh()
    returns = torch.randn(b, t, 1, generator=gen) * 3
    timesteps = torch.randint(0, 40, (b, t), generator=gen)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, :2] = 0  # left padding, as the evaluation loop pads short histories
    mask[2, :5] = 0
    return dict(states=states, actions=actions, returns_to_go=returns, timesteps=timesteps, attention_mask=mask,
                rewards=torch.zeros(b, t, 1))  # fmt: skip


@pytest.mark.parametrize("tanh", [True, False])
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_decision_transformer(tanh, safe, tmp_path):
    tf = transformers()
    config = tf.DecisionTransformerConfig(state_dim=STATE, act_dim=ACT, hidden_size=36, n_layer=3, n_head=3,
                                          max_ep_len=50, n_positions=64, action_tanh=tanh)  # fmt: skip
    torch.manual_seed(0)
    ref = tf.DecisionTransformerModel(config).eval()
    randomize(ref, seed=5)
    save_reference(ref, tmp_path, safe)
    ours = lmatlas.load(tmp_path)
    inputs = trajectories()
    with torch.no_grad():
        expected, got = ref(**inputs), ours(**inputs)
    real = inputs["attention_mask"].bool()
    for field in ("action_preds", "state_preds", "return_preds"):
        e, g = getattr(expected, field), got[field]
        assert g.shape == e.shape
        assert (g[real] - e[real]).abs().max().item() <= TOL, field
    e, g = expected.last_hidden_state, got["last_hidden_state"]
    assert (g[real.repeat_interleave(3, 1)] - e[real.repeat_interleave(3, 1)]).abs().max().item() <= TOL


def test_missing_inputs(tmp_path):
    tf = transformers()
    tf.DecisionTransformerModel(tf.DecisionTransformerConfig(state_dim=STATE, act_dim=ACT, hidden_size=12, n_layer=1,
                                                             n_head=2, max_ep_len=50)).save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path)
    inputs = trajectories()
    with pytest.raises(lmatlas.LmatlasError, match="reads states, actions, returns_to_go and timesteps"):
        ours(states=inputs["states"])
    inputs["timesteps"][0, 0] = 50
    with pytest.raises(lmatlas.LmatlasError, match="past max_ep_len 50"):
        ours(**inputs)


def test_save_round_trip(tmp_path):
    from lmatlas.save import save_model

    tf = transformers()
    config = tf.DecisionTransformerConfig(state_dim=STATE, act_dim=ACT, hidden_size=24, n_layer=2, n_head=2, max_ep_len=50)
    ref = tf.DecisionTransformerModel(config).eval()
    randomize(ref, seed=2)
    ref.save_pretrained(tmp_path / "ref")
    save_model(lmatlas.load(tmp_path / "ref"), tmp_path / "ours")
    back = tf.DecisionTransformerModel.from_pretrained(tmp_path / "ours").eval()
    inputs = trajectories()
    inputs["attention_mask"][:] = 1
    with torch.no_grad():
        assert (back(**inputs).action_preds - ref(**inputs).action_preds).abs().max().item() <= TOL
        assert (lmatlas.load(tmp_path / "ours")(**inputs)["action_preds"] - ref(**inputs).action_preds).abs().max() <= TOL
