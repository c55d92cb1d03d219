"""The Decision Transformer (Chen et al., 2021): reinforcement learning as sequence modelling.

A trajectory is a sequence of steps, each three tokens — the return still to collect (the
return-to-go), the state, the action — embedded by linear maps, plus a learned embedding of the
step's timestep. A GPT-2 (the decoder skeleton, over these embeddings instead of a token table)
reads them causally, and the action is predicted from the state's token: conditioning on a high
return-to-go asks for the actions that collect it.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import embedding, make_norm
from .config import ModelConfig
from .decoder import Decoder
from .errors import LmatlasError


class TrajectoryDecoder(nn.Module):
    """``decoder`` (GPT-2) over interleaved (return-to-go, state, action) embeddings, and the
    three predictions transformers' ``DecisionTransformerModel`` makes."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.state_dim is None or cfg.action_dim is None:
            raise LmatlasError("a trajectory model needs state_dim and act_dim in config.json")
        self.config = cfg
        h = cfg.hidden_size
        self.decoder = Decoder(cfg)
        self.embed_timestep = embedding(cfg.max_episode_length, h)
        self.embed_return = nn.Linear(1, h)
        self.embed_state = nn.Linear(cfg.state_dim, h)
        self.embed_action = nn.Linear(cfg.action_dim, h)
        self.embed_norm = make_norm(cfg, h)
        self.predict_state = nn.Linear(h, cfg.state_dim)
        self.predict_action = nn.Linear(h, cfg.action_dim)
        self.predict_return = nn.Linear(h, 1)
        self.action_tanh = cfg.action_tanh

    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """states (b, t, state_dim), actions (b, t, act_dim), returns_to_go (b, t, 1), timesteps
        (b, t) -> ``action_preds`` (read at each state), ``state_preds`` and ``return_preds``
        (read at each action), ``last_hidden_state`` (b, 3t, hidden)."""
        b, t = states.shape[:2]
        if actions.shape[:2] != (b, t) or returns_to_go.shape[:2] != (b, t) or timesteps.shape != (b, t):
            raise LmatlasError(
                f"states {tuple(states.shape)}, actions {tuple(actions.shape)}, returns_to_go "
                f"{tuple(returns_to_go.shape)} and timesteps {tuple(timesteps.shape)} must cover the same (batch, steps)"
            )
        if int(timesteps.max()) >= self.config.max_episode_length:
            raise LmatlasError(f"a timestep reaches {int(timesteps.max())}, past max_ep_len {self.config.max_episode_length}")
        dtype = self.embed_state.weight.dtype
        time = self.embed_timestep(timesteps)
        tokens = torch.stack(
            (self.embed_return(returns_to_go.to(dtype)) + time, self.embed_state(states.to(dtype)) + time,
             self.embed_action(actions.to(dtype)) + time), dim=2,
        ).reshape(b, 3 * t, -1)  # fmt: skip
        mask = None if attention_mask is None else attention_mask.repeat_interleave(3, dim=1)
        # Every token gets position 0: order is told by the timestep embeddings alone.
        positions = torch.zeros(b, 3 * t, dtype=torch.long, device=states.device)
        x = self.decoder(None, attention_mask=mask, position_ids=positions, inputs_embeds=self.embed_norm(tokens))
        x = x["last_hidden_state"]
        per_kind = x.reshape(b, t, 3, -1)  # (returns, states, actions) tokens of each step
        action = self.predict_action(per_kind[:, :, 1])
        return {
            "action_preds": torch.tanh(action) if self.action_tanh else action,
            "state_preds": self.predict_state(per_kind[:, :, 2]),
            "return_preds": self.predict_return(per_kind[:, :, 2]),
            "last_hidden_state": x,
        }


__all__ = ["TrajectoryDecoder"]
