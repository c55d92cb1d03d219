"""Qwen2 (Yang et al., 2024): Llama's layout with a bias on the query, key and value projections.

Pre-norm with RMSNorm, rotary positions, a SwiGLU MLP and grouped-query attention as in Llama;
the q/k/v projections have biases, the output projection and the MLP never do (whatever
config.json says about ``attention_bias``). Small sizes tie the LM head to the embeddings.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import LmatlasError
from . import llama
from ._maps import DECODER_HEADS
from .preset import Preset

# Qwen2Config's defaults where they differ from LlamaConfig's, for a config.json that leaves a
# field out.
_DEFAULTS = dict(vocab_size=151936, intermediate_size=22016, max_position_embeddings=32768)


def sliding_layers(hf: dict) -> list[int]:
    """The layers that attend within a window, as transformers reads config.json: the window is
    ignored unless ``use_sliding_window`` is true, and then covers layers from
    ``max_window_layers`` on (or those ``layer_types`` names)."""
    window = hf.get("sliding_window", 4096) if hf.get("use_sliding_window", False) else None
    types = hf.get("layer_types") or [
        "sliding_attention" if window is not None and i >= hf.get("max_window_layers", 28) else "full_attention"
        for i in range(hf.get("num_hidden_layers", 32))
    ]
    return [i for i, kind in enumerate(types) if kind == "sliding_attention"]


def config(hf: dict, head: str) -> ModelConfig:
    sliding = sliding_layers(hf)
    if sliding:
        raise LmatlasError(
            f"config.json: Qwen2's sliding-window attention on layers {sliding} (as use_sliding_window, "
            "sliding_window, max_window_layers and layer_types set it) is not supported"
        )
    cfg = llama.config(_DEFAULTS | hf, head)
    return cfg.replace(model_type="qwen2", qkv_bias=True, attention_bias=False, mlp_bias=False, hf_config=hf)


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    out = llama.layout_to_hf(cfg, "Qwen2", qkv_bias=True, attention_bias=False, mlp_bias=False)
    return dict(out, model_type="qwen2", use_sliding_window=False)


PRESET = Preset(
    name="qwen2",
    model_types=("qwen2",),
    skeleton="decoder",
    prefix="model",
    heads=DECODER_HEADS,
    class_prefix="Qwen2",
    tokenizer_family="qwen2",  # read from its tokenizer.json (see tokenizer/families.py)
    config=config,
    weights=llama.weights,
    to_hf=to_hf,
)
