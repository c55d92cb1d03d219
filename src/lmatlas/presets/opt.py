"""OPT (Zhang et al., 2022): Meta's open pre-trained Transformers, GPT-3's sizes.

Learned positions offset by 2 and counted over the attention mask; pre-norm, except OPT-350m
which is post-norm (``do_layer_norm_before`` false) and embeds words at a narrower width
(``word_embed_proj_dim``) projected in and out.
"""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import DECODER_HEADS, WeightMap, decoder_common, fused, linear, lm_head, score
from .preset import Preset

_OFFSET = 2  # fairseq reserved the first two position slots


def config(hf: dict, head: str) -> ModelConfig:
    d = hf.get("hidden_size", 768)
    narrow = hf.get("word_embed_proj_dim") or d
    pre = hf.get("do_layer_norm_before", True)
    bias = hf.get("enable_bias", True)
    return ModelConfig(
        model_type="opt",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        num_layers=hf.get("num_hidden_layers", 12),
        num_heads=hf.get("num_attention_heads", 12),
        intermediate_size=hf.get("ffn_dim", 3072),
        activation=hf.get("activation_function", "relu"),
        max_positions=hf.get("max_position_embeddings", 2048) + _OFFSET,
        position_offset=_OFFSET,
        positions_from_mask=True,
        embedding_size=narrow,
        embedding_projection=narrow != d,
        embedding_projection_bias=False,
        output_projection=narrow != d,
        norm_eps=1e-5,
        norm_affine=hf.get("layer_norm_elementwise_affine", True),
        norm_position="pre" if pre else "post",
        attention_bias=bias,
        mlp_bias=bias,
        hidden_dropout=hf.get("dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.0),
        **(decoder_common(hf) | dict(final_norm=pre and not hf.get("_remove_final_layer_norm", False))),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    affine = cfg.norm_affine
    bias = cfg.attention_bias

    def norm(ours: str, theirs: str) -> WeightMap:
        return linear(ours, theirs) if affine else {}

    backbone: WeightMap = {
        "backbone.embeddings.tokens.weight": "decoder.embed_tokens.weight",
        "backbone.embeddings.positions.weight": "decoder.embed_positions.weight",
    }
    if cfg.embedding_projection:
        backbone |= linear("backbone.embeddings.project", "decoder.project_in", bias=False)
        backbone |= linear("backbone.project_out", "decoder.project_out", bias=False)
    for i in range(cfg.num_layers):
        ours, theirs = f"backbone.layers.{i}", f"decoder.layers.{i}"
        att = f"{theirs}.self_attn"
        backbone |= norm(f"{ours}.attn_norm", f"{theirs}.self_attn_layer_norm")
        backbone |= fused(f"{ours}.attn.qkv", (f"{att}.q_proj", f"{att}.k_proj", f"{att}.v_proj"), bias=bias)
        backbone |= linear(f"{ours}.attn.out", f"{att}.out_proj", bias=bias)
        backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.final_layer_norm")
        backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.fc1", bias=bias)
        backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.fc2", bias=bias)
    if cfg.final_norm:
        backbone |= norm("backbone.final_norm", "decoder.final_layer_norm")
    return backbone, lm_head(head) | score(head)


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, plain_heads, require_usual

    plain_heads(cfg, "OPT")
    narrow = cfg.embedding_size != cfg.hidden_size
    pre = cfg.norm_position == "pre"  # do_layer_norm_before
    switches = dict(causal=True, norm="layernorm", norm_eps=1e-5, norm_position="pre" if pre else "post",
                    position_embedding="learned", position_offset=_OFFSET, positions_from_mask=True,
                    embedding_projection=narrow, output_projection=narrow, embedding_norm=False, gated_mlp=False,
                    qkv_bias=cfg.attention_bias, mlp_bias=cfg.attention_bias, attention_scale=None, lm_head_bias=False)
    if narrow:  # narrow word embeddings are projected in and out, without biases
        switches["embedding_projection_bias"] = False
    if not pre:  # a pre-norm OPT may lack its final norm (_remove_final_layer_norm), a post-norm one has none
        switches["final_norm"] = False
    require_usual(cfg, "OPT", **switches)
    return dict(
        common(cfg),
        model_type="opt",
        hidden_size=cfg.hidden_size,
        word_embed_proj_dim=cfg.embedding_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        ffn_dim=cfg.intermediate_size,
        activation_function=cfg.activation,
        max_position_embeddings=cfg.max_positions - _OFFSET,
        do_layer_norm_before=pre,
        _remove_final_layer_norm=pre and not cfg.final_norm,
        layer_norm_elementwise_affine=cfg.norm_affine,
        enable_bias=cfg.attention_bias,
        dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
    )


PRESET = Preset(
    name="opt",
    model_types=("opt",),
    skeleton="decoder",
    prefix="model",
    heads=DECODER_HEADS,
    class_prefix="OPT",
    tokenizer_family="gpt2",
    config=config,
    weights=weights,
    to_hf=to_hf,
)
