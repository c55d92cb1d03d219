"""Each GGUF architecture lmatlas reads: its metadata keys as config.json fields (the way
transformers' GGUF integration maps them) and its tensor names as transformers' names, so the
model is built through the family's preset like any Hugging Face checkpoint."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LmatlasError
from ..presets import preset_for
from .reader import GGUFFile, GGUFWeights, Rearrange


def unpermute_rotary(heads_key: str) -> Rearrange:
    """Undo llama.cpp's reordering of the q (or k) projection's rows: its converter interleaves
    each head's two rotary halves (``permute`` in convert_hf_to_gguf.py) for ggml's rotary
    kernel, which pairs neighbouring dimensions; lmatlas, like transformers, pairs the halves."""

    def fn(w: torch.Tensor, metadata: dict) -> torch.Tensor:
        heads = int(metadata[heads_key])
        # (heads, 2, half, ...) interleaved as (heads, half, 2, ...): swap back.
        return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)

    return fn


@dataclass(frozen=True)
class Architecture:
    """How one ``general.architecture`` reads: ``keys`` maps metadata keys (after the
    architecture's name) to config.json fields; ``layer`` and ``top`` map tensor names (``blk.N.``
    dropped) to transformers' names, with the rearrangement a tensor needs."""

    model_type: str
    keys: dict[str, str]
    top: dict[str, tuple[str, Rearrange | None]]
    layer: dict[str, tuple[str, Rearrange | None]]


LLAMA = Architecture(
    model_type="llama",
    keys={
        "context_length": "max_position_embeddings",
        "block_count": "num_hidden_layers",
        "feed_forward_length": "intermediate_size",
        "embedding_length": "hidden_size",
        "rope.dimension_count": "head_dim",
        "rope.freq_base": "rope_theta",
        "attention.head_count": "num_attention_heads",
        "attention.head_count_kv": "num_key_value_heads",
        "attention.layer_norm_rms_epsilon": "rms_norm_eps",
        "vocab_size": "vocab_size",
    },
    top={
        "token_embd.weight": ("embed_tokens.weight", None),
        "output_norm.weight": ("norm.weight", None),
        "output.weight": ("lm_head.weight", None),
    },
    layer={
        "attn_norm.weight": ("input_layernorm.weight", None),
        "attn_q.weight": ("self_attn.q_proj.weight", unpermute_rotary("llama.attention.head_count")),
        "attn_k.weight": ("self_attn.k_proj.weight", unpermute_rotary("llama.attention.head_count_kv")),
        "attn_v.weight": ("self_attn.v_proj.weight", None),
        "attn_output.weight": ("self_attn.o_proj.weight", None),
        "ffn_norm.weight": ("post_attention_layernorm.weight", None),
        "ffn_gate.weight": ("mlp.gate_proj.weight", None),
        "ffn_up.weight": ("mlp.up_proj.weight", None),
        "ffn_down.weight": ("mlp.down_proj.weight", None),
    },
)

ARCHITECTURES = {"llama": LLAMA}

# Needed to build any model at all; the others have the preset's defaults.
_REQUIRED = ("block_count", "embedding_length", "attention.head_count")
_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


def architecture_of(file: GGUFFile) -> Architecture:
    name = file.require("general.architecture", "loading a model")
    if name not in ARCHITECTURES:
        raise LmatlasError(
            f"{file.path}: architecture {name!r} is not one lmatlas reads from GGUF; "
            f"it reads {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name]


def hf_config(file: GGUFFile, arch: Architecture) -> dict:
    """The config.json the metadata stands for."""
    name = file.get("general.architecture")
    for key in _REQUIRED:
        file.require(f"{name}.{key}", f"a {name} model")
    hf: dict = {"model_type": arch.model_type}
    for key, field in arch.keys.items():
        if f"{name}.{key}" in file.metadata:
            hf[field] = file.metadata[f"{name}.{key}"]
    head_count_kv = hf.get("num_key_value_heads")
    if isinstance(head_count_kv, list):  # a count per layer: lmatlas' layers all have one
        if len(set(head_count_kv)) != 1:
            raise LmatlasError(f"{file.path}: {name}.attention.head_count_kv differs between layers")
        hf["num_key_value_heads"] = head_count_kv[0]
    scaling = file.get(f"{name}.rope.scaling.type", "none")
    if scaling != "none":
        # transformers' GGUF integration reads no rotary scaling either; a model using it would
        # run unscaled, with other outputs than llama.cpp's.
        raise LmatlasError(
            f"{file.path}: {name}.rope.scaling.type is {scaling!r}, which lmatlas does not read from GGUF"
        )
    if "vocab_size" not in hf:
        tokens = file.get("tokenizer.ggml.tokens")
        if not tokens and "token_embd.weight" not in file.tensors:
            raise LmatlasError(f"{file.path}: neither a vocabulary size, nor tokens, nor token embeddings")
        hf["vocab_size"] = len(tokens) if tokens else file.shape("token_embd.weight")[0]
    for gguf_key, field in (("bos", "bos"), ("eos", "eos"), ("padding", "pad")):
        value = file.get(f"tokenizer.ggml.{gguf_key}_token_id")
        if value is not None:
            hf[f"{field}_token_id"] = int(value)
    # A file without an output matrix reads its logits through the token embeddings.
    hf["tie_word_embeddings"] = "output.weight" not in file.tensors
    # GGUF holds language models: their LM head is the default one.
    hf["architectures"] = [preset_for(arch.model_type).class_name(arch.model_type, "causal-lm")]
    return hf


def tensor_names(file: GGUFFile, arch: Architecture) -> dict[str, tuple[str, Rearrange | None]]:
    """transformers' name -> (the stored name, its rearrangement), for each tensor the file holds."""
    names = {}
    for stored in file.tensors:
        if stored in arch.top:
            ours, fn = arch.top[stored]
            names[ours] = (stored, fn)
        elif (m := _LAYER.match(stored)) and m.group(2) in arch.layer:
            ours, fn = arch.layer[m.group(2)]
            names[f"layers.{m.group(1)}.{ours}"] = (stored, fn)
        else:
            # Biases, rope_freqs (Llama 3.1's rotary scaling), ...: dropping one would change the
            # model's outputs without a word.
            raise LmatlasError(
                f"{file.path}: tensor {stored} is not part of the {arch.model_type} layout lmatlas reads from GGUF"
            )
    return names


def read_model(path: Path) -> tuple[dict, GGUFWeights]:
    """(config.json-like dict, tensors under transformers' names) of a GGUF file."""
    file = GGUFFile(path)
    arch = architecture_of(file)
    return hf_config(file, arch), GGUFWeights(file, tensor_names(file, arch))
