"""Each GGUF architecture lmatlas reads: its metadata keys as config.json fields (the way
transformers' GGUF integration maps them) and its tensor names as transformers' names, so the
model is built through the family's preset like any Hugging Face checkpoint."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LmatlasError
from ..presets import preset_for
from .reader import GGUFFile, GGUFMetadata, GGUFWeights, Rearrange, open_gguf


def unpermute_rotary(heads_key: str) -> Rearrange:
    """Undo llama.cpp's reordering of the q (or k) projection's rows: its converter interleaves
    each head's two rotary halves (``permute`` in convert_hf_to_gguf.py) for ggml's rotary
    kernel, which pairs neighbouring dimensions; lmatlas, like transformers, pairs the halves."""

    def fn(w: torch.Tensor, metadata: dict) -> torch.Tensor:
        heads = int(metadata[heads_key])
        # (heads, 2, half, ...) interleaved as (heads, half, 2, ...): swap back.
        return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)

    return fn


def transpose(w: torch.Tensor, metadata: dict) -> torch.Tensor:
    """GPT-2's Conv1D keeps its weight as (in, out); llama.cpp's converter stores it as a Linear's."""
    return w.T.contiguous()


def per_head_qkv(heads_key: str) -> Rearrange:
    """BLOOM's fused q/k/v, which transformers keeps per head (each head's q, k and v rows
    together) and llama.cpp's converter stores as [all q; all k; all v]: back to per head."""

    def fn(w: torch.Tensor, metadata: dict) -> torch.Tensor:
        heads = int(metadata[heads_key])
        return w.reshape(3, heads, w.shape[0] // 3 // heads, *w.shape[1:]).transpose(0, 1).reshape(w.shape)

    return fn


@dataclass(frozen=True)
class Architecture:
    """How one ``general.architecture`` reads: ``keys`` maps metadata keys (after the
    architecture's name) to config.json fields; ``top`` and ``layer`` map tensor names
    (``blk.N.`` becomes ``{layers}.N.``) to transformers' names, with the rearrangement a tensor
    needs. ``settle``, when given, adds the config.json fields the metadata implies (or refuses a
    layout). ``tied``: the LM head is always the token embeddings (transformers ties BLOOM's and
    Falcon's whatever the file holds; llama.cpp's converter stores a copy as output.weight)."""

    model_type: str
    keys: dict[str, str]
    top: dict[str, tuple[str, Rearrange | None]]
    layer: dict[str, tuple[str, Rearrange | None]]
    layers: str = "layers"
    settle: Callable[[GGUFMetadata, dict], None] | None = None
    tied: bool = False


def _with_bias(names: dict[str, tuple[str, Rearrange | None]], biased: tuple[str, ...]) -> dict:
    """``names`` (GGUF name without ``.weight`` -> (transformers' name, rearrangement)) as
    ``.weight`` entries, and ``.bias`` ones for the ``biased`` tensors (same rearrangement, except
    a transposition, which a vector does not need)."""
    out = {}
    for stored, (ours, fn) in names.items():
        out[f"{stored}.weight"] = (f"{ours}.weight", fn)
        if stored in biased:
            out[f"{stored}.bias"] = (f"{ours}.bias", None if fn is transpose else fn)
    return out


_LLAMA_KEYS = {
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
}
_LLAMA_TOP = {
    "token_embd.weight": ("embed_tokens.weight", None),
    "output_norm.weight": ("norm.weight", None),
    "output.weight": ("lm_head.weight", None),
}


def _llama_layer(q: Rearrange | None, k: Rearrange | None, biased: tuple[str, ...] = ()) -> dict:
    return _with_bias(
        {
            "attn_norm": ("input_layernorm", None),
            "attn_q": ("self_attn.q_proj", q),
            "attn_k": ("self_attn.k_proj", k),
            "attn_v": ("self_attn.v_proj", None),
            "attn_output": ("self_attn.o_proj", None),
            "ffn_norm": ("post_attention_layernorm", None),
            "ffn_gate": ("mlp.gate_proj", None),
            "ffn_up": ("mlp.up_proj", None),
            "ffn_down": ("mlp.down_proj", None),
        },
        biased,
    )


LLAMA = Architecture(
    model_type="llama",
    keys=_LLAMA_KEYS,
    top=_LLAMA_TOP,
    layer=_llama_layer(unpermute_rotary("llama.attention.head_count"), unpermute_rotary("llama.attention.head_count_kv")),
)

# llama.cpp runs Qwen2 with GPT-NeoX's rotation (halves), so its converter leaves q and k as
# they are; transformers reads no head size for it (hidden size / heads).
QWEN2 = Architecture(
    model_type="qwen2",
    keys={k: v for k, v in _LLAMA_KEYS.items() if k != "rope.dimension_count"},
    top=_LLAMA_TOP,
    layer=_llama_layer(None, None, biased=("attn_q", "attn_k", "attn_v")),
)

GPT2 = Architecture(
    model_type="gpt2",
    keys={
        # transformers maps context_length to n_ctx only, and builds n_positions' default 1024
        # positions: the position table of a file with another length would not fit it.
        "context_length": "n_positions",
        "block_count": "n_layer",
        "embedding_length": "n_embd",
        "feed_forward_length": "n_inner",
        "attention.head_count": "n_head",
        "attention.layer_norm_epsilon": "layer_norm_epsilon",
    },
    top={
        "token_embd.weight": ("wte.weight", None),
        "position_embd.weight": ("wpe.weight", None),
        "output_norm.weight": ("ln_f.weight", None),
        "output_norm.bias": ("ln_f.bias", None),
        "output.weight": ("lm_head.weight", None),
    },
    layer=_with_bias(
        {
            "attn_norm": ("ln_1", None),
            "attn_qkv": ("attn.c_attn", transpose),
            "attn_output": ("attn.c_proj", transpose),
            "ffn_norm": ("ln_2", None),
            "ffn_up": ("mlp.c_fc", transpose),
            "ffn_down": ("mlp.c_proj", transpose),
        },
        biased=("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"),
    ),
    layers="h",
)


def _h_layout(qkv: Rearrange | None, mlp_norm: bool) -> tuple[dict, dict]:
    """(top, layer) names of BLOOM and Falcon, which share transformers' names (``h.N``,
    ``self_attention``, ``dense_h_to_4h``...); every tensor but the embeddings may have a bias."""
    top = {
        "token_embd.weight": ("word_embeddings.weight", None),
        "output_norm.weight": ("ln_f.weight", None),
        "output_norm.bias": ("ln_f.bias", None),
    }
    names = {
        "attn_norm": ("input_layernorm", None),
        "attn_qkv": ("self_attention.query_key_value", qkv),
        "attn_output": ("self_attention.dense", None),
        "ffn_up": ("mlp.dense_h_to_4h", None),
        "ffn_down": ("mlp.dense_4h_to_h", None),
    }
    if mlp_norm:
        names["ffn_norm"] = ("post_attention_layernorm", None)
    return top, _with_bias(names, biased=tuple(names))


_BLOOM_TOP, _BLOOM_LAYER = _h_layout(per_head_qkv("bloom.attention.head_count"), mlp_norm=True)
BLOOM = Architecture(
    model_type="bloom",
    keys={
        "context_length": "seq_length",
        "block_count": "n_layer",
        "embedding_length": "hidden_size",
        "attention.head_count": "n_head",
        "attention.layer_norm_epsilon": "layer_norm_epsilon",
        "vocab_size": "vocab_size",
    },
    top=_BLOOM_TOP | {
        "token_embd_norm.weight": ("word_embeddings_layernorm.weight", None),
        "token_embd_norm.bias": ("word_embeddings_layernorm.bias", None),
    },
    layer=_BLOOM_LAYER,
    layers="h",
    tied=True,
)


def _settle_falcon(file: GGUFMetadata, hf: dict) -> None:
    """Falcon-7B's layout, the one transformers builds from GGUF (its defaults: one key/value
    head, attention and MLP in parallel over one norm). Falcon-40B's (grouped key/value heads, a
    second norm, q/k/v regrouped by llama.cpp's converter) would be misread: refused."""
    kv = hf.pop("num_key_value_heads", 1)
    if kv != 1 or any(name.endswith(".attn_norm_2.weight") for name in file.tensors):
        raise LmatlasError(
            f"{file.path}: a Falcon with {kv} key/value heads or two norms per layer (Falcon-40B's layout) "
            "is not read from GGUF; lmatlas reads Falcon-7B's (one key/value head, one norm)"
        )
    bias = "blk.0.attn_qkv.bias" in file.tensors
    hf.update(multi_query=True, new_decoder_architecture=False, parallel_attn=True, bias=bias)


# One key/value head: llama.cpp's [all q; k; v] is transformers' multi-query layout as it is.
_FALCON_TOP, _FALCON_LAYER = _h_layout(None, mlp_norm=False)
FALCON = Architecture(
    model_type="falcon",
    keys={
        "context_length": "max_position_embeddings",
        "block_count": "num_hidden_layers",
        "feed_forward_length": "ffn_hidden_size",
        "embedding_length": "hidden_size",
        "rope.freq_base": "rope_theta",
        "attention.head_count": "num_attention_heads",
        "attention.head_count_kv": "num_key_value_heads",
        "attention.layer_norm_epsilon": "layer_norm_epsilon",
        "vocab_size": "vocab_size",
    },
    top=_FALCON_TOP,
    layer=_FALCON_LAYER,
    layers="h",
    settle=_settle_falcon,
    tied=True,
)

ARCHITECTURES = {a.model_type: a for a in (LLAMA, QWEN2, GPT2, BLOOM, FALCON)}

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


def hf_config(file: GGUFMetadata, arch: Architecture) -> dict:
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
    hf["tie_word_embeddings"] = arch.tied or "output.weight" not in file.tensors
    if arch.settle is not None:
        arch.settle(file, hf)
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
            names[f"{arch.layers}.{m.group(1)}.{ours}"] = (stored, fn)
        elif stored == "output.weight" and arch.tied:
            continue  # the embeddings' copy (see Architecture.tied)
        else:
            # Biases, rope_freqs (Llama 3.1's rotary scaling), ...: dropping one would change the
            # model's outputs without a word.
            raise LmatlasError(
                f"{file.path}: tensor {stored} is not part of the {arch.model_type} layout lmatlas reads from GGUF"
            )
    return names


def read_model(path: Path) -> tuple[dict, GGUFWeights]:
    """(config.json-like dict, tensors under transformers' names) of a GGUF file."""
    file = open_gguf(path)
    arch = architecture_of(file)
    return hf_config(file, arch), GGUFWeights(file, tensor_names(file, arch))
