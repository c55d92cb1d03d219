"""GPT (Radford et al., 2018, "openai-gpt"): the first generative pre-trained Transformer.

A decoder with learned positions and BERT's post-norm layers (norm after each residual), no
final norm; tanh-approximated GELU; Conv1D (transposed) projections.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import LmatlasError
from . import gpt2
from ._maps import DECODER_HEADS, WeightMap, decoder_common, lm_head, score
from .preset import Preset

# GPT's "gelu" is the tanh approximation.
_ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu", "silu": "silu", "swish": "silu"}


def config(hf: dict, head: str) -> ModelConfig:
    d = hf.get("n_embd", 768)
    return ModelConfig(
        model_type="openai-gpt",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        num_layers=hf.get("n_layer", 12),
        num_heads=hf.get("n_head", 12),
        intermediate_size=4 * d,
        activation=_ACTIVATIONS[hf.get("afn", "gelu")],
        max_positions=hf.get("n_positions", 512),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        norm_position="post",
        hidden_dropout=hf.get("resid_pdrop", 0.1),
        attention_dropout=hf.get("attn_pdrop", 0.1),
        **(decoder_common(hf) | dict(final_norm=False)),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    # GPT-2 kept GPT's layer names; only the embeddings are named otherwise (and there is no ln_f).
    backbone: WeightMap = {
        "backbone.embeddings.tokens.weight": "tokens_embed.weight",
        "backbone.embeddings.positions.weight": "positions_embed.weight",
    }
    for i in range(cfg.num_layers):
        backbone |= gpt2.layer(i)
    return backbone, lm_head(head) | score(head)


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, plain_heads, require_usual

    plain_heads(cfg, "GPT")
    # The MLP is always four times the width: config.json has no field for it.
    require_usual(cfg, "GPT", causal=True, norm="layernorm", norm_position="post", position_embedding="learned",
                  position_offset=0, final_norm=False, embedding_norm=False, gated_mlp=False, attention_bias=True,
                  qkv_bias=True, mlp_bias=True, attention_scale=None, embedding_size=cfg.hidden_size,
                  intermediate_size=4 * cfg.hidden_size, lm_head_bias=False, norm_affine=True)
    afn = {ours: theirs for theirs, ours in _ACTIVATIONS.items() if theirs != "swish"}
    if cfg.activation not in afn:
        raise LmatlasError(f"a GPT config.json cannot express activation {cfg.activation!r} "
                           f"(only {', '.join(sorted(afn))}); choose an architecture of another family")
    return dict(
        common(cfg),
        model_type="openai-gpt",
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        afn=afn[cfg.activation],
        n_positions=cfg.max_positions,
        layer_norm_epsilon=cfg.norm_eps,
        resid_pdrop=cfg.hidden_dropout,
        embd_pdrop=cfg.hidden_dropout,
        attn_pdrop=cfg.attention_dropout,
    )


PRESET = Preset(
    name="gpt",
    model_types=("openai-gpt",),
    skeleton="decoder",
    prefix="transformer",
    heads=DECODER_HEADS,
    class_prefix="OpenAIGPT",
    tokenizer_family=None,  # the tokenizer's own files decide
    config=config,
    weights=weights,
    to_hf=to_hf,
    class_suffixes={"causal-lm": "LMHeadModel"},  # the older GPTs' name for a causal LM
)
