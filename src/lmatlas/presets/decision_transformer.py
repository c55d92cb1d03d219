"""The Decision Transformer (Chen et al., 2021): GPT-2 over (return-to-go, state, action) tokens
with timestep embeddings (``lmatlas.trajectories``)."""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import Derived, FirstOf, WeightMap, linear, norm
from . import gpt2
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    # Its config.json names GPT-2's n_embd hidden_size (128 by default).
    gpt = dict(hf, n_embd=hf.get("hidden_size", hf.get("n_embd", 128)))
    return gpt2.config(gpt, head).replace(
        model_type="decision_transformer",
        state_dim=hf.get("state_dim", 17),
        action_dim=hf.get("act_dim", 4),
        max_episode_length=hf.get("max_ep_len", 4096),
        action_tanh=hf.get("action_tanh", True),
    )


def _under(name, prefix: str):
    return name.prefixed(prefix) if isinstance(name, (Derived, FirstOf)) else prefix + name


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    # GPT-2's own map, moved under the trajectory model: ours backbone.decoder.*, theirs encoder.*.
    backbone = {
        ours.replace("backbone.", "backbone.decoder.", 1): _under(theirs, "encoder.")
        for ours, theirs in gpt2.backbone(cfg).items()
    }
    backbone["backbone.embed_timestep.weight"] = "embed_timestep.weight"
    for ours, theirs in [("embed_return", "embed_return"), ("embed_state", "embed_state"),
                         ("embed_action", "embed_action"), ("predict_state", "predict_state"),
                         ("predict_action", "predict_action.0"), ("predict_return", "predict_return")]:  # fmt: skip
        backbone |= linear(f"backbone.{ours}", theirs)
    backbone |= norm("backbone.embed_norm", "embed_ln")
    return backbone, {}


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    out = gpt2.to_hf(cfg.replace(model_type="gpt2"))
    return dict(
        out,
        hidden_size=out.pop("n_embd"),
        model_type="decision_transformer",
        state_dim=cfg.state_dim,
        act_dim=cfg.action_dim,
        max_ep_len=cfg.max_episode_length,
        action_tanh=cfg.action_tanh,
    )


PRESET = Preset(
    name="decision_transformer",
    model_types=("decision_transformer",),
    skeleton="decoder",
    # transformers' DecisionTransformerModel is the only class: its names carry no prefix.
    prefix="decision_transformer",
    heads={"Model": "base"},
    class_prefix="DecisionTransformer",
    tokenizer_family=None,
    config=config,
    weights=weights,
    to_hf=to_hf,
)
