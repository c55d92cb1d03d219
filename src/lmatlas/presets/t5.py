"""T5 (Raffel et al., 2020): every task as text-to-text, on one encoder-decoder.

Pre-norm layers with RMS norms (no bias, no centring) and a final norm after each stack; no
position embeddings but a learned per-head bias by relative-position bucket, computed once per
stack (the first layer holds the table) and added to every layer's scores; scores unscaled (the
initialisation absorbs 1/sqrt(d)); no biases anywhere. v1.0: ReLU MLP, LM head tied to the token
table and fed the last hidden state scaled by d_model**-0.5; v1.1 (and Flan-T5): gated-GELU MLP
and an untied head.

transformers 4 reads both from tie_word_embeddings: tied means scaled. transformers 5 writes
``scale_decoder_outputs`` for the scaling and always tie_word_embeddings true, keeping the head
untied when the checkpoint stores an ``lm_head`` of other values than the token table (``ties``).
"""

from __future__ import annotations

from ..config import ModelConfig
from ..blocks import ACTIVATIONS
from ..errors import LmatlasError
from ._maps import SEQ2SEQ_HEADS, WeightMap, fused, linear, seq2seq_common, shared_tokens
from .preset import Preset


def _feed_forward(hf: dict) -> tuple[str, bool]:
    proj = hf.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or act not in ACTIVATIONS:
        raise ValueError(f"feed_forward_proj {proj!r} is not 'ACT' or 'gated-ACT' with a known ACT")
    return act, len(parts) == 2


def config(hf: dict, head: str) -> ModelConfig:
    d = hf.get("d_model", 512)
    act, gated = _feed_forward(hf)
    common = seq2seq_common(hf)
    scaled = hf.get("scale_decoder_outputs")
    if scaled is None:
        scaled = common["tie_word_embeddings"]
    layers = hf.get("num_layers", 6)
    return ModelConfig(
        model_type="t5",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        num_layers=layers,
        decoder_layers=hf.get("num_decoder_layers") or layers,
        num_heads=hf.get("num_heads", 8),
        head_dim=hf.get("d_kv", 64),
        intermediate_size=hf.get("d_ff", 2048),
        activation=act,
        gated_mlp=gated,
        position_embedding="relative",
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        norm="rmsnorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        norm_position="pre",
        embedding_norm=False,
        final_norm=True,
        attention_bias=False,
        mlp_bias=False,
        attention_scale=1.0,
        lm_head_scale=d**-0.5 if scaled else 1.0,
        hidden_dropout=hf.get("dropout_rate", 0.1),
        attention_dropout=hf.get("dropout_rate", 0.1),
        **common,
    )


_TABLE = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def ties(cfg: ModelConfig, head: str, weights, prefix: str) -> ModelConfig:
    """A config.json with ``scale_decoder_outputs`` (written by transformers 5) says
    tie_word_embeddings true whatever the head: the head is untied when the checkpoint stores an
    ``lm_head`` that is not the token table, as transformers 5 then leaves it untied."""
    if head != "seq2seq-lm" or not cfg.tie_word_embeddings or "scale_decoder_outputs" not in cfg.hf_config:
        return cfg
    if "lm_head.weight" not in weights:
        return cfg
    table = next((prefix + n for n in _TABLE if prefix + n in weights), None)
    if table is not None and weights.same("lm_head.weight", table):
        return cfg
    return cfg.replace(tie_word_embeddings=False)


def dense_mlp(cfg: ModelConfig, ours: str, mlp: str) -> WeightMap:
    """T5's MLP (``DenseReluDense``, or another family's name for it) at ``mlp``."""
    m: WeightMap = {}
    if cfg.gated_mlp:
        m |= linear(f"{ours}.gate", f"{mlp}.wi_0", bias=False)
        m |= linear(f"{ours}.fc_in", f"{mlp}.wi_1", bias=False)
    else:
        m |= linear(f"{ours}.fc_in", f"{mlp}.wi", bias=False)
    return m | linear(f"{ours}.fc_out", f"{mlp}.wo", bias=False)


def t5_mlp(cfg: ModelConfig, stack: str, i: int, ours: str, sublayer: str) -> WeightMap:
    return dense_mlp(cfg, ours, f"{sublayer}.DenseReluDense")


def weights(cfg: ModelConfig, head: str, mlp=t5_mlp) -> tuple[WeightMap, WeightMap]:
    """T5's weight names; ``mlp(cfg, stack, i, ours, sublayer)`` names layer ``i``'s MLP (Switch
    Transformers' differ)."""
    backbone: WeightMap = shared_tokens()
    for stack, layers in (("encoder", cfg.num_layers), ("decoder", cfg.decoder_layers or cfg.num_layers)):
        backbone[f"backbone.{stack}.relative_attention_bias.weight"] = (
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        )
        for i in range(layers):
            ours, theirs = f"backbone.{stack}.layers.{i}", f"{stack}.block.{i}.layer"
            att = f"{theirs}.0.SelfAttention"
            backbone |= fused(f"{ours}.attn.qkv", (f"{att}.q", f"{att}.k", f"{att}.v"), bias=False)
            backbone |= linear(f"{ours}.attn.out", f"{att}.o", bias=False)
            backbone |= linear(f"{ours}.attn_norm", f"{theirs}.0.layer_norm", bias=False)
            ff = 1
            if stack == "decoder":
                cross = f"{theirs}.1.EncDecAttention"
                backbone |= linear(f"{ours}.cross_attn.q", f"{cross}.q", bias=False)
                backbone |= fused(f"{ours}.cross_attn.kv", (f"{cross}.k", f"{cross}.v"), bias=False)
                backbone |= linear(f"{ours}.cross_attn.out", f"{cross}.o", bias=False)
                backbone |= linear(f"{ours}.cross_norm", f"{theirs}.1.layer_norm", bias=False)
                ff = 2
            backbone |= mlp(cfg, stack, i, f"{ours}.mlp", f"{theirs}.{ff}")
            backbone |= linear(f"{ours}.mlp_norm", f"{theirs}.{ff}.layer_norm", bias=False)
        backbone |= linear(f"backbone.{stack}.final_norm", f"{stack}.final_layer_norm", bias=False)
    heads: WeightMap = {}
    if head == "seq2seq-lm" and not cfg.tie_word_embeddings:
        heads["head.decoder.weight"] = "lm_head.weight"
    return backbone, heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, require

    require(cfg, "T5", norm="rmsnorm", norm_position="pre", position_embedding="relative", final_norm=True,
            attention_bias=False, mlp_bias=False, embedding_norm=False)
    act = cfg.activation
    if cfg.gated_mlp:
        proj = "gated-gelu" if act == "gelu_new" else f"gated-{act}"
    else:
        proj = act
    layers = cfg.num_layers
    out = dict(
        common(cfg),
        model_type="t5",
        d_model=cfg.hidden_size,
        num_layers=layers,
        num_decoder_layers=cfg.decoder_layers or layers,
        num_heads=cfg.num_heads,
        d_kv=cfg.head_dim,
        d_ff=cfg.intermediate_size,
        feed_forward_proj=proj,
        relative_attention_num_buckets=cfg.relative_attention_num_buckets,
        relative_attention_max_distance=cfg.relative_attention_max_distance,
        layer_norm_epsilon=cfg.norm_eps,
        dropout_rate=cfg.hidden_dropout,
        is_encoder_decoder=True,
        decoder_start_token_id=cfg.decoder_start_token_id,
    )
    if "scale_decoder_outputs" in cfg.hf_config:
        # A config.json of transformers 5 keeps its form, the scaling a field of its own.
        # Otherwise tie_word_embeddings says both, as transformers 4 reads it (see ``config``).
        d = cfg.hidden_size
        if cfg.lm_head_scale not in (1.0, d**-0.5):
            raise LmatlasError(f"a T5 config.json cannot express lm_head_scale={cfg.lm_head_scale!r} "
                               f"(it must be 1.0 or d_model**-0.5, {d**-0.5!r})")
        out["scale_decoder_outputs"] = cfg.lm_head_scale != 1.0
    return out


PRESET = Preset(
    name="t5",
    model_types=("t5",),
    skeleton="encoder-decoder",
    prefix="",
    heads=SEQ2SEQ_HEADS | {"EncoderModel": "encoder"},
    class_prefix="T5",
    tokenizer_family="t5",
    config=config,
    weights=weights,
    to_hf=to_hf,
    ties=ties,
)
