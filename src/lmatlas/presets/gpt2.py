"""GPT-2 (Radford et al., 2019) and DialoGPT (GPT-2 weights trained on Reddit dialogue).

Pre-norm layers (norm before each sublayer) and a final norm; learned positions; Conv1D
(transposed) projections. ``scale_attn_by_inverse_layer_idx`` divides scores by depth.
"""

from __future__ import annotations

from typing import Callable

from ..config import ModelConfig
from ..errors import LmatlasError
from ._maps import DECODER_HEADS, WeightMap, conv1d, decoder_common, lm_head, norm, score
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    if hf.get("add_cross_attention"):
        raise LmatlasError("GPT-2 with cross-attention (add_cross_attention) is not supported")
    d = hf.get("n_embd", 768)
    return ModelConfig(
        model_type="gpt2",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        num_layers=hf.get("n_layer", 12),
        num_heads=hf.get("n_head", 12),
        intermediate_size=hf.get("n_inner") or 4 * d,
        activation=hf.get("activation_function", "gelu_new"),
        max_positions=hf.get("n_positions", 1024),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        norm_position="pre",
        attention_scale=None if hf.get("scale_attn_weights", True) else 1.0,
        attention_scale_by_inverse_layer=bool(hf.get("scale_attn_by_inverse_layer_idx", False)),
        hidden_dropout=hf.get("resid_pdrop", 0.1),
        attention_dropout=hf.get("attn_pdrop", 0.1),
        **decoder_common(hf),
    )


def layer(i: int, proj: Callable[[str, str], WeightMap] = conv1d,
          attention: Callable[[str, str], WeightMap] | None = None) -> WeightMap:
    """Layer ``i`` under GPT-2's names (``h.{i}``: ln_1, attn.c_attn and c_proj, ln_2, mlp.c_fc and
    c_proj), which GPT and GPT-Neo keep. ``proj`` maps a projection (GPT's and GPT-2's Conv1D,
    GPT-Neo's Linear); ``attention(ours, theirs)``, when given, maps the attention in place of
    c_attn and c_proj (GPT-Neo splits it into q/k/v/out projections)."""
    ours, theirs = f"backbone.layers.{i}", f"h.{i}"
    m = norm(f"{ours}.attn_norm", f"{theirs}.ln_1")
    if attention is None:
        m |= proj(f"{ours}.attn.qkv", f"{theirs}.attn.c_attn")
        m |= proj(f"{ours}.attn.out", f"{theirs}.attn.c_proj")
    else:
        m |= attention(f"{ours}.attn", f"{theirs}.attn")
    m |= norm(f"{ours}.mlp_norm", f"{theirs}.ln_2")
    m |= proj(f"{ours}.mlp.fc_in", f"{theirs}.mlp.c_fc")
    m |= proj(f"{ours}.mlp.fc_out", f"{theirs}.mlp.c_proj")
    return m


def backbone(cfg: ModelConfig, proj: Callable[[str, str], WeightMap] = conv1d,
             attention: Callable[[str, str], WeightMap] | None = None) -> WeightMap:
    """GPT-2's embeddings (wte, wpe), layers (see ``layer``) and final norm (ln_f), shared by GPT-Neo."""
    m: WeightMap = {
        "backbone.embeddings.tokens.weight": "wte.weight",
        "backbone.embeddings.positions.weight": "wpe.weight",
    }
    for i in range(cfg.num_layers):
        m |= layer(i, proj, attention)
    m |= norm("backbone.final_norm", "ln_f")
    return m


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    return backbone(cfg), lm_head(head) | score(head)


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, plain_heads, require

    plain_heads(cfg, "GPT-2")
    require(cfg, "GPT-2", norm="layernorm", norm_position="pre", position_embedding="learned", final_norm=True,
            gated_mlp=False, attention_bias=True, qkv_bias=True, mlp_bias=True, embedding_norm=False,
            embedding_size=cfg.hidden_size, lm_head_bias=False, norm_affine=True)
    if cfg.attention_scale not in (None, 1.0):
        raise LmatlasError(f"a GPT-2 config.json cannot express attention_scale={cfg.attention_scale}")
    return dict(
        common(cfg),
        model_type="gpt2",
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size,
        activation_function=cfg.activation,
        n_positions=cfg.max_positions,
        n_ctx=cfg.max_positions,
        layer_norm_epsilon=cfg.norm_eps,
        scale_attn_weights=cfg.attention_scale is None,
        scale_attn_by_inverse_layer_idx=cfg.attention_scale_by_inverse_layer,
        resid_pdrop=cfg.hidden_dropout,
        embd_pdrop=cfg.hidden_dropout,
        attn_pdrop=cfg.attention_dropout,
    )


PRESET = Preset(
    name="gpt2",
    model_types=("gpt2",),
    skeleton="decoder",
    prefix="transformer",
    heads=DECODER_HEADS,
    class_prefix="GPT2",
    tokenizer_family="gpt2",
    config=config,
    weights=weights,
    to_hf=to_hf,
    class_suffixes={"causal-lm": "LMHeadModel"},  # the older GPTs' name for a causal LM
)
