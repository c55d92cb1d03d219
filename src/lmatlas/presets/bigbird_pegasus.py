"""Big Bird-Pegasus (Zaheer et al., 2020): Pegasus with Big Bird's block-sparse attention in the
encoder, for summarising documents of thousands of tokens (arXiv, PubMed, patents). Pre-norm
layers, learned positions (not offset), scaled embeddings, a final norm after each stack
(named ``layernorm_embedding``), no biases on attention when ``use_bias`` is false."""

from __future__ import annotations

from ..config import ModelConfig
from ._maps import SEQ2SEQ_HEADS, WeightMap, fused, linear
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


def _big_bird_attention(ours: str, theirs: str, bias: bool) -> WeightMap:
    """The encoder's self-attention under Big Bird's names."""
    att = (f"{theirs}.self.query", f"{theirs}.self.key", f"{theirs}.self.value")
    return fused(f"{ours}.qkv", att, bias) | linear(f"{ours}.out", f"{theirs}.output", bias)


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    return bart.family_weights(cfg, head, encoder_attention=_big_bird_attention, final_norm_name="layernorm_embedding")


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
