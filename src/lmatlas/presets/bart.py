"""BART (Lewis et al., 2019): a denoising autoencoder, BERT's encoder and GPT's decoder joined.

Post-norm layers, learned positions offset by 2 (fairseq reserved two slots), a norm over the
embeddings (``layernorm_embedding``), one token table shared by encoder, decoder and LM head,
and ``final_logits_bias`` added to the logits. The layer names are those of its whole family:
mBART, Marian and Pegasus are this module's ``family_preset`` with other switches.
"""

from __future__ import annotations

import math

from ..blocks import ACTIVATIONS
from ..config import ModelConfig
from ..errors import LmatlasError
from ._maps import (
    SEQ2SEQ_HEADS,
    FirstOf,
    WeightMap,
    final_logits_bias,
    fused,
    linear,
    norm,
    seq2seq_common,
    shared_tokens,
)
from .preset import Preset

_OFFSET = 2


def family_config(
    hf: dict,
    model_type: str,
    *,
    norm_position: str,
    final_norm: bool,
    embedding_norm: bool,
    positions: str,
) -> ModelConfig:
    """The BART family's config.json: ``positions`` "learned" (offset by 2) or "sinusoidal"
    (computed, sines then cosines, as Marian's and Pegasus' tables)."""
    d = hf.get("d_model", 1024)
    learned = positions == "learned"
    vocab = hf["vocab_size"]
    shared = hf.get("share_encoder_decoder_embeddings", True)
    activation = hf.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation_function {activation!r} is not one of {', '.join(sorted(ACTIVATIONS))}")
    return ModelConfig(
        model_type=model_type,
        vocab_size=vocab,
        hidden_size=d,
        num_layers=hf.get("encoder_layers", 12),
        num_heads=hf.get("encoder_attention_heads", 16),
        intermediate_size=hf.get("encoder_ffn_dim", 4096),
        decoder_layers=hf.get("decoder_layers", 12),
        decoder_heads=hf.get("decoder_attention_heads", 16),
        decoder_intermediate_size=hf.get("decoder_ffn_dim", 4096),
        # Marian's separate target vocabulary (only with separate embeddings).
        decoder_vocab_size=None if shared else (hf.get("decoder_vocab_size") or vocab),
        shared_embeddings=shared,
        activation=activation,
        max_positions=hf.get("max_position_embeddings", 1024) + (_OFFSET if learned else 0),
        position_offset=_OFFSET if learned else 0,
        position_embedding=positions,
        positions_stored=learned,
        sinusoidal_layout="concat",
        positions_float64=True,
        embedding_scale=math.sqrt(d) if hf.get("scale_embedding", False) else 1.0,
        embedding_norm=embedding_norm,
        norm_eps=1e-5,
        norm_position=norm_position,
        final_norm=final_norm,
        lm_head_bias=True,  # final_logits_bias
        hidden_dropout=hf.get("dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.0),
        **seq2seq_common(hf),
    )


def _attention(ours: str, theirs: str, bias: bool = True) -> WeightMap:
    m = fused(f"{ours}.qkv", (f"{theirs}.q_proj", f"{theirs}.k_proj", f"{theirs}.v_proj"), bias)
    return m | linear(f"{ours}.out", f"{theirs}.out_proj", bias)


# Each stack's token table when one vocabulary's tables are untied: its own, else the shared one.
_TABLES = {stack: (f"{stack}.embed_tokens.weight", "shared.weight") for stack in ("encoder", "decoder")}


def family_ties(cfg: ModelConfig, head: str, weights, prefix: str) -> ModelConfig:
    """Encoder and decoder read one table, unless tie_word_embeddings is false and the checkpoint
    stores the two with different values. transformers 4 ties the three tables (``shared`` and
    each stack's) whatever the config says, and stores one; transformers 5 ties them only when
    tie_word_embeddings is true, and otherwise stores all three."""
    if not cfg.shared_embeddings or cfg.tie_word_embeddings:
        return cfg
    stored = [next((prefix + n for n in names if prefix + n in weights), None) for names in _TABLES.values()]
    if None in stored or weights.same(*stored):
        return cfg
    return cfg.replace(shared_embeddings=False)


def family_weights(cfg: ModelConfig, head: str, separate_vocabularies: bool = False, encoder_attention=_attention,
                   final_norm_name: str = "layer_norm") -> tuple[WeightMap, WeightMap]:
    """``separate_vocabularies``: the family saves tables that are not shared as two
    vocabularies, each under its stack's name only (Marian); the others save untied tables of
    one vocabulary as transformers 5 does, with ``shared`` a copy of the encoder's.
    ``encoder_attention(ours, theirs, bias)`` names the encoder's self-attention and
    ``final_norm_name`` each stack's last norm, where a relative names them otherwise (Big
    Bird-Pegasus)."""
    b = cfg.attention_bias
    backbone: WeightMap = {}
    if cfg.shared_embeddings:
        backbone |= shared_tokens()
    else:
        for stack, names in _TABLES.items():
            backbone[f"backbone.{stack}.embeddings.tokens.weight"] = FirstOf(names, aliases=not separate_vocabularies)
    for stack, layers in (("encoder", cfg.num_layers), ("decoder", cfg.decoder_layers or cfg.num_layers)):
        if cfg.position_embedding == "learned":
            backbone[f"backbone.{stack}.embeddings.positions.weight"] = f"{stack}.embed_positions.weight"
        if cfg.embedding_norm:
            backbone |= norm(f"backbone.{stack}.embeddings.norm", f"{stack}.layernorm_embedding")
        for i in range(layers):
            ours, theirs = f"backbone.{stack}.layers.{i}", f"{stack}.layers.{i}"
            attention = encoder_attention if stack == "encoder" else _attention
            backbone |= attention(f"{ours}.attn", f"{theirs}.self_attn", b)
            backbone |= norm(f"{ours}.attn_norm", f"{theirs}.self_attn_layer_norm")
            if stack == "decoder":
                cross = f"{theirs}.encoder_attn"
                backbone |= linear(f"{ours}.cross_attn.q", f"{cross}.q_proj", b)
                backbone |= fused(f"{ours}.cross_attn.kv", (f"{cross}.k_proj", f"{cross}.v_proj"), b)
                backbone |= linear(f"{ours}.cross_attn.out", f"{cross}.out_proj", b)
                backbone |= norm(f"{ours}.cross_norm", f"{theirs}.encoder_attn_layer_norm")
            backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.fc1")
            backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.fc2")
            backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.final_layer_norm")
        if cfg.final_norm:
            backbone |= norm(f"backbone.{stack}.final_norm", f"{stack}.{final_norm_name}")
    heads: WeightMap = {}
    if head == "seq2seq-lm":
        heads |= final_logits_bias()
        if not cfg.tie_word_embeddings:
            heads["head.decoder.weight"] = "lm_head.weight"
    return backbone, heads


def family_to_hf(
    cfg: ModelConfig,
    family: str,
    *,
    norm_position: str,
    final_norm: bool,
    embedding_norm: bool,
    positions: str,
    separate_vocabularies: bool = False,
) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``family_config`` with the same layout).
    ``separate_vocabularies``: the family can store a decoder vocabulary of its own (Marian)."""
    from ._inverse import common, plain_heads, require_usual

    plain_heads(cfg, family)
    d = cfg.hidden_size
    offset = _OFFSET if positions == "learned" else 0
    # scale_embedding: sqrt(d_model) or nothing.
    scaled = cfg.embedding_scale == math.sqrt(d)
    switches = dict(is_encoder_decoder=True, causal=False, norm="layernorm", norm_eps=1e-5, norm_affine=True,
                    norm_position=norm_position, final_norm=final_norm, embedding_norm=embedding_norm,
                    position_embedding=positions, position_offset=offset,
                    embedding_scale=math.sqrt(d) if scaled else 1.0, gated_mlp=False, attention_bias=True,
                    qkv_bias=True, mlp_bias=True, attention_scale=None, embedding_size=d)
    if positions == "sinusoidal":
        switches["sinusoidal_layout"] = "concat"
    if separate_vocabularies and not cfg.shared_embeddings:
        pass  # two vocabularies (share_encoder_decoder_embeddings below)
    elif not cfg.shared_embeddings and not cfg.tie_word_embeddings:
        # Untied tables of one vocabulary: what tie_word_embeddings false means to transformers 5
        # (transformers 4 ties the tables, and reads one of the stored values into all three).
        switches |= dict(decoder_vocab_size=None)
    else:
        switches |= dict(shared_embeddings=True, decoder_vocab_size=None)
    require_usual(cfg, family, **switches)
    decoder_heads = cfg.decoder_heads or cfg.num_heads
    if d % decoder_heads:
        raise LmatlasError(f"a {family} config.json cannot express {decoder_heads} decoder heads of width {d}")
    out = dict(
        common(cfg),
        model_type=cfg.model_type,
        d_model=d,
        encoder_layers=cfg.num_layers,
        encoder_attention_heads=cfg.num_heads,
        encoder_ffn_dim=cfg.intermediate_size,
        decoder_layers=cfg.decoder_layers or cfg.num_layers,
        decoder_attention_heads=decoder_heads,
        decoder_ffn_dim=cfg.decoder_intermediate_size or cfg.intermediate_size,
        activation_function=cfg.activation,
        max_position_embeddings=cfg.max_positions - offset,
        scale_embedding=scaled,
        dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
        is_encoder_decoder=True,
        decoder_start_token_id=cfg.decoder_start_token_id,
        forced_bos_token_id=cfg.forced_bos_token_id,
        forced_eos_token_id=cfg.forced_eos_token_id,
    )
    if separate_vocabularies:
        if cfg.target_vocab_size != cfg.vocab_size:
            # config.json can say so, but transformers builds the decoder's own table (a copy of
            # the encoder's) with vocab_size rows: the checkpoint would not load.
            raise LmatlasError(f"a {family} model with a target vocabulary of its own size "
                               f"({cfg.target_vocab_size}, source {cfg.vocab_size}) does not load in transformers; "
                               "give both vocabularies the same size")
        out["share_encoder_decoder_embeddings"] = cfg.shared_embeddings
        out["decoder_vocab_size"] = cfg.target_vocab_size
    return out


def family_preset(
    model_type: str,
    family: str,
    layout: dict,
    *,
    class_prefix: str,
    tokenizer_family: str,
    separate_vocabularies: bool = False,
    class_suffixes: dict[str, str] | None = None,
) -> Preset:
    """A preset of BART's family: its layer names and heads, with ``layout`` the switches its
    config.json does not store (the keywords of ``family_config`` and ``family_to_hf``);
    ``family`` names it in errors, ``separate_vocabularies`` as ``family_weights``."""

    def config(hf: dict, head: str) -> ModelConfig:
        return family_config(hf, model_type, **layout)

    def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
        return family_weights(cfg, head, separate_vocabularies)

    def to_hf(cfg: ModelConfig) -> dict:
        """config.json fields for ``cfg`` (the inverse of ``config``)."""
        return family_to_hf(cfg, family, **layout, separate_vocabularies=separate_vocabularies)

    return Preset(
        name=model_type,
        model_types=(model_type,),
        skeleton="encoder-decoder",
        prefix="model",
        heads=SEQ2SEQ_HEADS,
        class_prefix=class_prefix,
        class_suffixes=class_suffixes or {},
        tokenizer_family=tokenizer_family,
        config=config,
        weights=weights,
        to_hf=to_hf,
        ties=family_ties,
    )


PRESET = family_preset(
    "bart",
    "BART",
    dict(norm_position="post", final_norm=False, embedding_norm=True, positions="learned"),
    class_prefix="Bart",
    tokenizer_family="bart",
)
