"""Switch Transformer (Fedus et al., 2021): T5 v1.0 with a mixture of experts in every other
(or every fourth) layer's MLP, one expert per token (``moe.py``). Its parameters grow with the
number of experts while the compute per token stays that of one MLP."""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import SEQ2SEQ_HEADS, WeightMap, linear
from . import t5
from .preset import Preset


def _step(hf: dict, stack: str, layers: int) -> int:
    """A stack's sparse step: as stored, else as transformers' config derives it from the number
    of sparse layers (with none, the depth, which still makes layer 1 sparse)."""
    if f"{stack}_sparse_step" in hf:
        return hf[f"{stack}_sparse_step"]
    n = hf.get(f"num_sparse_{stack}_layers", 3)
    return layers // n if n > 0 else layers


def config(hf: dict, head: str) -> ModelConfig:
    act = hf.get("dense_act_fn", "relu")
    cfg = t5.config(dict(hf, feed_forward_proj=act), head)
    return cfg.replace(
        model_type="switch_transformers",
        num_experts=hf.get("num_experts", 8),
        sparse_step=_step(hf, "encoder", cfg.num_layers),
        decoder_sparse_step=_step(hf, "decoder", cfg.decoder_layers or cfg.num_layers),
        expert_capacity=hf.get("expert_capacity", 64),
        router_bias=hf.get("router_bias", False),
        router_jitter_noise=hf.get("router_jitter_noise", 0.01),
        router_z_loss_coef=hf.get("router_z_loss_coef", 0.001),
        router_aux_loss_coef=hf.get("router_aux_loss_coef", 0.001),
    )


def _mlp(cfg: ModelConfig, stack: str, i: int, ours: str, sublayer: str) -> WeightMap:
    step_cfg = cfg.encoder_config() if stack == "encoder" else cfg.decoder_config()
    if not step_cfg.sparse_layer(i):
        return t5.dense_mlp(cfg, ours, f"{sublayer}.mlp")
    m = linear(f"{ours}.router", f"{sublayer}.mlp.router.classifier", bias=cfg.router_bias)
    for e in range(cfg.num_experts):
        m |= t5.dense_mlp(cfg, f"{ours}.experts.{e}", f"{sublayer}.mlp.experts.expert_{e}")
    return m


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    return t5.weights(cfg, head, mlp=_mlp)


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import require

    require(cfg, "Switch Transformers", gated_mlp=False)
    out = t5.to_hf(cfg)
    del out["feed_forward_proj"]
    layers, decoder_layers = out["num_layers"], out["num_decoder_layers"]
    enc_step = cfg.sparse_step
    dec_step = cfg.sparse_step if cfg.decoder_sparse_step is None else cfg.decoder_sparse_step
    return dict(
        out,
        model_type="switch_transformers",
        dense_act_fn=cfg.activation,
        num_experts=cfg.num_experts,
        encoder_sparse_step=enc_step,
        decoder_sparse_step=dec_step,
        # The counts transformers' config derives the steps from (it stores both).
        num_sparse_encoder_layers=layers // enc_step if enc_step else 0,
        num_sparse_decoder_layers=decoder_layers // dec_step if dec_step else 0,
        expert_capacity=cfg.expert_capacity,
        router_bias=cfg.router_bias,
        router_jitter_noise=cfg.router_jitter_noise,
        router_z_loss_coef=cfg.router_z_loss_coef,
        router_aux_loss_coef=cfg.router_aux_loss_coef,
    )


PRESET = Preset(
    name="switch_transformers",
    model_types=("switch_transformers",),
    skeleton="encoder-decoder",
    prefix="",
    heads=SEQ2SEQ_HEADS | {"EncoderModel": "encoder"},
    class_prefix="SwitchTransformers",
    tokenizer_family="t5",
    config=config,
    weights=weights,
    to_hf=to_hf,
    ties=t5.ties,
)
