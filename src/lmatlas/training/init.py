"""Weight initialisation for training: each paper's scheme, chosen from the model's config.

Every ``LmatlasModel`` starts from ``init_weights`` (BERT's and GPT-2's N(0, 0.02), zero
biases, unit norms), which model construction applies; a model trained from scratch then takes
its paper's own scheme (``init_from_scratch``), and a new task head takes ``init_weights`` too.
"""

from __future__ import annotations

import math

import torch

from ..blocks import init_weights
from ..model import LmatlasModel


def init_from_scratch(model: LmatlasModel) -> None:
    """The paper's initialisation of a model built from an architecture preset: T5's for T5,
    GPT-2's scaled residual projections for pre-norm decoders, else the default it has."""
    cfg = model.config
    if cfg.model_type == "t5":
        t5_init(model)
    elif cfg.causal and cfg.norm_position == "pre":
        scale_residual_init(model)


def t5_init(model: LmatlasModel) -> None:
    """T5's (Mesh TensorFlow's) initialisation. Its attention does not divide the scores by
    sqrt(d): the queries start smaller by 1/sqrt(d_kv) instead; every projection starts at
    1/sqrt(fan-in) and the token table at unit scale (the tied output rescales by d^-0.5)."""
    cfg = model.config
    d, d_kv = cfg.hidden_size, cfg.head_dim
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim < 2:
                continue
            if name.endswith("attn.qkv.weight"):  # [q; k; v] of self-attention
                q = cfg.num_heads * d_kv
                p[:q].normal_(0.0, (d * d_kv) ** -0.5)
                p[q:].normal_(0.0, d**-0.5)
            elif name.endswith("cross_attn.q.weight"):
                p.normal_(0.0, (d * d_kv) ** -0.5)
            elif name.endswith(("cross_attn.kv.weight", "mlp.fc_in.weight", "mlp.gate.weight",
                                "relative_attention_bias.weight")):
                p.normal_(0.0, d**-0.5)
            elif name.endswith(("attn.out.weight", "cross_attn.out.weight")):
                p.normal_(0.0, (cfg.num_heads * d_kv) ** -0.5)
            elif name.endswith("mlp.fc_out.weight"):
                p.normal_(0.0, p.shape[1] ** -0.5)
            elif name.endswith(("tokens.weight", "head.decoder.weight")):
                p.normal_(0.0, 1.0)


def scale_residual_init(model: LmatlasModel, std: float = 0.02) -> None:
    """GPT-2's initialisation: the projections that write into the residual stream start
    smaller by 1/sqrt(2 * layers), as the stream adds one per sublayer."""
    n = model.config.num_layers
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("attn.out.weight", "mlp.fc_out.weight")):
                p.normal_(0.0, std / math.sqrt(2 * n))


__all__ = ["init_from_scratch", "init_weights", "scale_residual_init", "t5_init"]
