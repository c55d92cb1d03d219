"""CTRL (Keskar et al., 2019): a conditional Transformer language model steered by control codes.

Pre-norm layers, the Transformer's sinusoidal positions (all sines, then all cosines; computed,
not stored), token embeddings scaled by sqrt(d), ReLU MLP, and an LM head with a bias.
"""

from __future__ import annotations

import math

from ..config import ModelConfig
from ._maps import DECODER_HEADS, WeightMap, decoder_common, fused, linear, lm_head, norm, score
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    d = hf.get("n_embd", 1280)
    return ModelConfig(
        model_type="ctrl",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        num_layers=hf.get("n_layer", 48),
        num_heads=hf.get("n_head", 16),
        intermediate_size=hf.get("dff", 8192),
        activation="relu",
        max_positions=hf.get("n_positions", 256),
        position_embedding="sinusoidal",
        positions_stored=False,
        sinusoidal_layout="concat",
        embedding_scale=math.sqrt(d),
        # The layers' norms are fixed at 1e-6; only the final one reads the config.
        norm_eps=1e-6,
        final_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        norm_position="pre",
        lm_head_bias=True,
        hidden_dropout=hf.get("resid_pdrop", 0.1),
        attention_dropout=0.0,
        **decoder_common(hf),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    backbone: WeightMap = {"backbone.embeddings.tokens.weight": "w.weight"}
    for i in range(cfg.num_layers):
        ours, theirs = f"backbone.layers.{i}", f"h.{i}"
        att = f"{theirs}.multi_head_attention"
        backbone |= norm(f"{ours}.attn_norm", f"{theirs}.layernorm1")
        backbone |= fused(f"{ours}.attn.qkv", (f"{att}.Wq", f"{att}.Wk", f"{att}.Wv"))
        backbone |= linear(f"{ours}.attn.out", f"{att}.dense")
        backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.layernorm2")
        backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.ffn.0")
        backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.ffn.2")
    backbone |= norm("backbone.final_norm", "layernorm")
    heads = lm_head(head, bias=True) | score(head, "classifier")
    return backbone, heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, plain_heads, require_usual

    plain_heads(cfg, "CTRL")
    require_usual(cfg, "CTRL", causal=True, norm="layernorm", norm_eps=1e-6, norm_position="pre",
                  position_embedding="sinusoidal", sinusoidal_layout="concat", position_offset=0, final_norm=True,
                  final_norm_eps=cfg.final_norm_eps, embedding_norm=False, embedding_scale=math.sqrt(cfg.hidden_size),
                  activation="relu", gated_mlp=False, attention_bias=True, qkv_bias=True, mlp_bias=True,
                  attention_scale=None, embedding_size=cfg.hidden_size, lm_head_bias=True, norm_affine=True)
    return dict(
        common(cfg),
        model_type="ctrl",
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        dff=cfg.intermediate_size,
        n_positions=cfg.max_positions,
        # Only the final norm reads it (the layers' are fixed at 1e-6).
        layer_norm_epsilon=cfg.norm_eps if cfg.final_norm_eps is None else cfg.final_norm_eps,
        resid_pdrop=cfg.hidden_dropout,
        embd_pdrop=cfg.hidden_dropout,
    )


PRESET = Preset(
    name="ctrl",
    model_types=("ctrl",),
    skeleton="decoder",
    prefix="transformer",
    heads=DECODER_HEADS,
    class_prefix="CTRL",
    tokenizer_family=None,  # the tokenizer's own files decide
    config=config,
    weights=weights,
    to_hf=to_hf,
    class_suffixes={"causal-lm": "LMHeadModel"},  # the older GPTs' name for a causal LM
)
