"""Falcon (TII, 2023): multi-query attention, rotary positions and parallel attention + MLP.

Three layouts: Falcon-7B (one key/value head, attention and MLP in parallel over one norm),
Falcon-40B's "new decoder architecture" (grouped key/value heads, a norm for each branch), and
the sequential pre-norm layout with full heads and ALiBi of Falcon-RW.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import LmatlasError
from ._maps import DECODER_HEADS, WeightMap, decoder_common, grouped_qkv, linear, lm_head, norm, rope, score
from .preset import Preset


def _layout(hf: dict) -> tuple[str, int]:
    """(norm_position, parallel_norms) as transformers' FalconDecoderLayer reads the flags."""
    new = hf.get("new_decoder_architecture", False)
    parallel = hf.get("parallel_attn", True)
    n_ln = hf.get("num_ln_in_parallel_attn")
    if new:
        if not parallel:
            raise LmatlasError("Falcon's new decoder architecture with parallel_attn false is not supported")
        return "parallel", 2 if n_ln in (None, 2) else 1
    return ("parallel", 1) if parallel else ("pre", 1)


def _kv_heads(hf: dict) -> int:
    heads = hf.get("num_attention_heads", 71)
    if hf.get("new_decoder_architecture", False):
        return hf.get("num_kv_heads") or heads
    return 1 if hf.get("multi_query", True) else heads


def config(hf: dict, head: str) -> ModelConfig:
    d = hf.get("hidden_size", 4544)
    position, n_norms = _layout(hf)
    alibi = bool(hf.get("alibi", False))
    bias = bool(hf.get("bias", False))
    return ModelConfig(
        model_type="falcon",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        num_layers=hf.get("num_hidden_layers", 32),
        num_heads=hf.get("num_attention_heads", 71),
        num_kv_heads=_kv_heads(hf),
        intermediate_size=hf.get("ffn_hidden_size") or 4 * d,
        activation=hf.get("activation", "gelu"),
        max_positions=hf.get("max_position_embeddings", 2048),
        position_embedding="alibi" if alibi else "rotary",
        alibi_before_scale=True,
        **rope(hf),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        norm_position=position,
        parallel_norms=n_norms,
        attention_bias=bias,
        mlp_bias=bias,
        hidden_dropout=hf.get("hidden_dropout", 0.0),
        attention_dropout=hf.get("attention_dropout", 0.0),
        **decoder_common(hf),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    hf = cfg.hf_config
    bias = cfg.attention_bias
    backbone: WeightMap = {"backbone.embeddings.tokens.weight": "word_embeddings.weight"}
    for i in range(cfg.num_layers):
        ours, theirs = f"backbone.layers.{i}", f"h.{i}"
        att = f"{theirs}.self_attention"
        if hf.get("new_decoder_architecture", False) or not hf.get("multi_query", True):
            # Per key/value group: its query heads, then its key and value heads.
            backbone |= grouped_qkv(
                f"{ours}.attn.qkv", f"{att}.query_key_value", cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, bias
            )
        else:  # Falcon-7B's multi-query layout is already [all queries; key; value]
            backbone |= linear(f"{ours}.attn.qkv", f"{att}.query_key_value", bias=bias)
        backbone |= linear(f"{ours}.attn.out", f"{att}.dense", bias=bias)
        backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.mlp.dense_h_to_4h", bias=bias)
        backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.mlp.dense_4h_to_h", bias=bias)
        if cfg.norm_position == "parallel" and cfg.parallel_norms == 2:
            backbone |= norm(f"{ours}.attn_norm", f"{theirs}.ln_attn")
            backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.ln_mlp")
        else:
            backbone |= norm(f"{ours}.attn_norm", f"{theirs}.input_layernorm")
            if cfg.norm_position == "pre":
                backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.post_attention_layernorm")
    backbone |= norm("backbone.final_norm", "ln_f")
    return backbone, lm_head(head) | score(head)


def _hf_layout(cfg: ModelConfig) -> dict:
    """The flags that give ``cfg``'s layout in transformers' FalconDecoderLayer (see ``_layout``)."""
    heads, kv = cfg.num_heads, cfg.num_kv_heads
    if cfg.norm_position == "parallel" and cfg.parallel_norms == 2:
        return dict(new_decoder_architecture=True, parallel_attn=True, num_ln_in_parallel_attn=2, num_kv_heads=kv)
    if cfg.norm_position not in ("parallel", "pre"):
        raise LmatlasError(f"a Falcon config.json cannot express norm_position={cfg.norm_position!r} "
                           "(it must be 'parallel' or 'pre'); choose an architecture of another family")
    parallel = cfg.norm_position == "parallel"
    # The original layout knows one key/value head (multi_query) or one per query head; only the
    # new architecture groups them, and it is always parallel.
    if kv in (1, heads):
        return dict(new_decoder_architecture=False, parallel_attn=parallel, multi_query=kv == 1,
                    num_ln_in_parallel_attn=None, num_kv_heads=kv)
    if not parallel:
        raise LmatlasError(f"a Falcon config.json cannot express {kv} key/value heads of {heads} in the "
                           "sequential (pre-norm) layout: only 1 or one per head")
    return dict(new_decoder_architecture=True, parallel_attn=True, num_ln_in_parallel_attn=1, num_kv_heads=kv)


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, require_usual

    if cfg.head_dim * cfg.num_heads != cfg.hidden_size:
        raise LmatlasError(f"a Falcon config.json cannot express head_dim {cfg.head_dim} with "
                           f"{cfg.num_heads} heads of hidden size {cfg.hidden_size}")
    switches = dict(causal=True, norm="layernorm", embedding_norm=False, final_norm=True, gated_mlp=False,
                    qkv_bias=cfg.attention_bias, mlp_bias=cfg.attention_bias, attention_scale=None,
                    embedding_size=cfg.hidden_size, lm_head_bias=False, norm_affine=True)
    if cfg.position_embedding == "alibi":  # Falcon adds it before the scaling
        switches["alibi_before_scale"] = True
    else:  # GPT-NeoX's rotation (halves) over the whole head
        switches |= dict(position_embedding="rotary", rotary_interleaved=False, rotary_dim=cfg.head_dim)
    require_usual(cfg, "Falcon", **switches)
    return dict(
        common(cfg),
        **_hf_layout(cfg),
        model_type="falcon",
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        ffn_hidden_size=cfg.intermediate_size,
        activation=cfg.activation,
        max_position_embeddings=cfg.max_positions,
        alibi=cfg.position_embedding == "alibi",
        rope_theta=cfg.rotary_base,
        rope_scaling=cfg.rope_scaling,
        layer_norm_epsilon=cfg.norm_eps,
        bias=cfg.attention_bias,
        hidden_dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
    )


PRESET = Preset(
    name="falcon",
    model_types=("falcon",),
    skeleton="decoder",
    prefix="transformer",
    heads=DECODER_HEADS,
    class_prefix="Falcon",
    tokenizer_family=None,  # the tokenizer's own files decide
    config=config,
    weights=weights,
    to_hf=to_hf,
)
