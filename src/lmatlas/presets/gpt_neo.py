"""GPT-Neo (Black et al., 2021): EleutherAI's open replication of GPT-3's design.

GPT-2's pre-norm layers with GPT-3's alternating dense ("global") and locally banded ("local")
attention; attention scores are not scaled by 1/sqrt(d); q/k/v projections without biases.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import LmatlasError
from . import gpt2
from ._maps import DECODER_HEADS, WeightMap, decoder_common, fused, linear, lm_head, score
from .preset import Preset


def _attention_layers(hf: dict) -> list[str]:
    if hf.get("attention_layers"):
        return list(hf["attention_layers"])
    # attention_types: [[["global", "local"], 12]] = the pattern repeated 12 times.
    layers: list[str] = []
    for pattern, repeat in hf.get("attention_types", [[["global", "local"], 12]]):
        layers.extend(list(pattern) * repeat)
    return layers


def config(hf: dict, head: str) -> ModelConfig:
    d = hf.get("hidden_size", 2048)
    return ModelConfig(
        model_type="gpt_neo",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        num_layers=hf.get("num_layers", 24),
        num_heads=hf.get("num_heads", 16),
        intermediate_size=hf.get("intermediate_size") or 4 * d,
        activation=hf.get("activation_function", "gelu_new"),
        max_positions=hf.get("max_position_embeddings", 2048),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        norm_position="pre",
        attention_scale=1.0,
        qkv_bias=False,
        attention_layers=_attention_layers(hf),
        local_attention_window=hf.get("window_size", 256),
        hidden_dropout=hf.get("resid_dropout", 0.0),
        attention_dropout=hf.get("attention_dropout", 0.0),
        **decoder_common(hf),
    )


def _attention(ours: str, theirs: str) -> WeightMap:
    att = f"{theirs}.attention"
    m = fused(f"{ours}.qkv", (f"{att}.q_proj", f"{att}.k_proj", f"{att}.v_proj"), bias=False)
    return m | linear(f"{ours}.out", f"{att}.out_proj")


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    # GPT-2's names, with Linear projections and a split attention.
    return gpt2.backbone(cfg, linear, _attention), lm_head(head) | score(head)


def _attention_types(layers: list[str]) -> list:
    """``attention_layers`` as config.json's ``attention_types``: the shortest pattern that,
    repeated, gives them (the whole list when none is shorter)."""
    n = len(layers)
    for period in range(1, n + 1):
        if n % period == 0 and layers == layers[:period] * (n // period):
            return [[layers[:period], n // period]]
    return [[layers, 1]]  # no layers


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, plain_heads, require_usual

    plain_heads(cfg, "GPT-Neo")
    require_usual(cfg, "GPT-Neo", causal=True, norm="layernorm", norm_position="pre", position_embedding="learned",
                  position_offset=0, final_norm=True, embedding_norm=False, gated_mlp=False, attention_bias=True,
                  qkv_bias=False, mlp_bias=True, attention_scale=1.0, embedding_size=cfg.hidden_size,
                  lm_head_bias=False, norm_affine=True)
    layers = list(cfg.attention_layers or ["global"] * cfg.num_layers)
    if not set(layers) <= {"global", "local"}:
        raise LmatlasError(f"a GPT-Neo config.json cannot express attention_layers {layers} (only global and local)")
    return dict(
        common(cfg),
        model_type="gpt_neo",
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        activation_function=cfg.activation,
        max_position_embeddings=cfg.max_positions,
        layer_norm_epsilon=cfg.norm_eps,
        attention_types=_attention_types(layers),
        attention_layers=layers,
        window_size=cfg.local_attention_window,
        resid_dropout=cfg.hidden_dropout,
        embed_dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
    )


PRESET = Preset(
    name="gpt_neo",
    model_types=("gpt_neo",),
    skeleton="decoder",
    prefix="transformer",
    heads=DECODER_HEADS,
    class_prefix="GPTNeo",
    tokenizer_family="gpt2",
    config=config,
    weights=weights,
    to_hf=to_hf,
)
