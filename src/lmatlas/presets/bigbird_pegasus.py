"""Big Bird-Pegasus (Zaheer et al., 2020): Pegasus with Big Bird's block-sparse attention in the
encoder, for summarising documents of thousands of tokens (arXiv, PubMed, patents). Pre-norm
layers, learned positions (not offset), scaled embeddings, a final norm after each stack
(named ``layernorm_embedding``), no biases on attention when ``use_bias`` is false."""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import SEQ2SEQ_HEADS, WeightMap, final_logits_bias, fused, linear, norm, shared_tokens
from . import bart, big_bird
from .preset import Preset


def config(hf: dict, head: str) -> ModelConfig:
    cfg = bart.family_config(hf, "bigbird_pegasus", norm_position="pre", final_norm=True, embedding_norm=False,
                             positions="learned")
    kind = hf.get("attention_type", "block_sparse")
    big_bird.check_attention_type(kind)
    bias = hf.get("use_bias", False)
    return cfg.replace(
        max_positions=hf.get("max_position_embeddings", 4096),
        position_offset=0,
        attention_bias=bias,
        qkv_bias=bias,
        block_sparse=kind == "block_sparse",
        block_size=hf.get("block_size", 64),
        num_random_blocks=hf.get("num_random_blocks", 3),
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    b = cfg.attention_bias
    backbone: WeightMap = shared_tokens()
    for stack, layers in (("encoder", cfg.num_layers), ("decoder", cfg.decoder_layers or cfg.num_layers)):
        backbone[f"backbone.{stack}.embeddings.positions.weight"] = f"{stack}.embed_positions.weight"
        for i in range(layers):
            ours, theirs = f"backbone.{stack}.layers.{i}", f"{stack}.layers.{i}"
            att = f"{theirs}.self_attn"
            if stack == "encoder":  # Big Bird's names, in the encoder only
                backbone |= fused(f"{ours}.attn.qkv", (f"{att}.self.query", f"{att}.self.key", f"{att}.self.value"), b)
                backbone |= linear(f"{ours}.attn.out", f"{att}.output", b)
            else:
                backbone |= fused(f"{ours}.attn.qkv", (f"{att}.q_proj", f"{att}.k_proj", f"{att}.v_proj"), b)
                backbone |= linear(f"{ours}.attn.out", f"{att}.out_proj", b)
                cross = f"{theirs}.encoder_attn"
                backbone |= linear(f"{ours}.cross_attn.q", f"{cross}.q_proj", b)
                backbone |= fused(f"{ours}.cross_attn.kv", (f"{cross}.k_proj", f"{cross}.v_proj"), b)
                backbone |= linear(f"{ours}.cross_attn.out", f"{cross}.out_proj", b)
                backbone |= norm(f"{ours}.cross_norm", f"{theirs}.encoder_attn_layer_norm")
            backbone |= norm(f"{ours}.attn_norm", f"{theirs}.self_attn_layer_norm")
            backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.fc1")
            backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.fc2")
            backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.final_layer_norm")
        backbone |= norm(f"backbone.{stack}.final_norm", f"{stack}.layernorm_embedding")
    heads: WeightMap = {}
    if head == "seq2seq-lm":
        heads |= final_logits_bias()
        if not cfg.tie_word_embeddings:
            heads["head.decoder.weight"] = "lm_head.weight"
    return backbone, heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    # BART's family writer, told the biases and the unshifted positions it cannot store itself.
    out = bart.family_to_hf(
        cfg.replace(attention_bias=True, qkv_bias=True, position_offset=2, max_positions=cfg.max_positions + 2,
                    block_sparse=False),
        "Big Bird-Pegasus", norm_position="pre", final_norm=True, embedding_norm=False, positions="learned",
    )
    return dict(
        out,
        model_type="bigbird_pegasus",
        use_bias=cfg.attention_bias,
        attention_type="block_sparse" if cfg.block_sparse else "original_full",
        block_size=cfg.block_size,
        num_random_blocks=cfg.num_random_blocks,
    )


PRESET = Preset(
    name="bigbird_pegasus",
    model_types=("bigbird_pegasus",),
    skeleton="encoder-decoder",
    prefix="model",
    heads=SEQ2SEQ_HEADS,
    class_prefix="BigBirdPegasus",
    tokenizer_family="pegasus",
    config=config,
    weights=weights,
    to_hf=to_hf,
    ties=bart.family_ties,
)
