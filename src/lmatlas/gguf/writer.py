"""Writing a model as a GGUF file: the reading of ``config`` run backwards, with ``gguf``'s own
writer. The config.json fields become the architecture's metadata keys, the tensors (in
transformers' names and layouts, as ``save.hf_state_dict`` gives them) take the GGUF names,
with each rearrangement the reader undoes re-applied (llama's q/k row permutation, GPT-2's
transposed projections); the tokenizer and the chat template go into the metadata.

Before anything is written the metadata is read back as the reader will read it: a model the
format cannot express (another activation, a head size GGUF does not carry...) is refused in
one sentence instead of being written as another model."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LmatlasError
from ..presets import preset_for
from ..presets._maps import Derived
from .config import ARCHITECTURES, Architecture, hf_config
from .tokenizer import CONTROL, PRE_TOKENIZERS, USER_DEFINED

# The architectures lmatlas writes (those whose whole layout the reader maps back).
WRITABLE = ("llama", "qwen2", "gpt2")
DTYPES = ("f32", "f16", "q8_0")
NORMAL = 1  # llama.cpp's token type of an ordinary token
# ModelConfig fields that do not change what the model computes.
_INERT = {
    "hf_config", "generation", "hidden_dropout", "attention_dropout", "id2label", "num_labels", "problem_type",
    "architectures", "pad_token_id", "bos_token_id", "eos_token_id", "classifier_activation", "mlm_activation",
}  # fmt: skip


class _Planned:
    """The parts of a GGUF file the reader's ``hf_config`` looks at (metadata, tensor names),
    before the file exists: the metadata is read back with the reader's own code."""

    def __init__(self, path: Path, metadata: dict[str, Any], tensors: dict[str, tuple[int, ...]]):
        self.path, self.metadata, self.tensors = path, metadata, tensors

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str, why: str) -> Any:
        if key not in self.metadata:
            raise LmatlasError(f"{self.path}: the model gives no {key}, which {why} needs")
        return self.metadata[key]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name]


def _metadata(arch: Architecture, hf: dict, cfg) -> dict[str, Any]:
    name = arch.model_type
    out: dict[str, Any] = {}
    for key, field in arch.keys.items():
        if hf.get(field) is not None:
            out[f"{name}.{key}"] = hf[field]
    if "rope.dimension_count" in arch.keys:  # llama.cpp rotates this many dimensions of a head
        out[f"{name}.rope.dimension_count"] = cfg.rotary_dim or cfg.head_dim
    if hf.get("rope_scaling"):
        raise LmatlasError(f"the model scales its rotary positions ({hf['rope_scaling']}), which lmatlas does not write to GGUF")
    out[f"{name}.vocab_size"] = cfg.vocab_size
    for field, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        value = getattr(cfg, f"{field}_token_id")
        if isinstance(value, list):
            value = value[0] if value else None
        # (GPT-2's config.json keeps 50256 for a vocabulary trained anew: an id no token has)
        if value is not None and 0 <= int(value) < cfg.vocab_size:
            out[f"tokenizer.ggml.{key}_token_id"] = int(value)
    return out


def _gguf_names(arch: Architecture, state: dict[str, torch.Tensor], prefix: str) -> dict[str, tuple[str, Any]]:
    """transformers' name (as in ``state``) -> (the GGUF name, the reader's rearrangement)."""
    top = {ours: (stored, fn) for stored, (ours, fn) in arch.top.items()}
    layer = {ours: (stored, fn) for stored, (ours, fn) in arch.layer.items()}
    pattern = re.compile(rf"^{re.escape(arch.layers)}\.(\d+)\.(.+)$")
    out = {}
    for name in state:
        bare = name.removeprefix(prefix)
        if bare in top:
            out[name] = top[bare]
        elif (m := pattern.match(bare)) and m.group(2) in layer:
            stored, fn = layer[m.group(2)]
            out[name] = (f"blk.{m.group(1)}.{stored}", fn)
        else:
            raise LmatlasError(f"the model's tensor {name} has no place in GGUF's {arch.model_type} layout")
    return out


def _stored(value: torch.Tensor, fn, metadata: dict) -> np.ndarray:
    """The tensor the reader rearranges into ``value`` (``fn`` only moves values)."""
    from ..save import _inverse

    if fn is not None:
        value = _inverse(Derived(("",), lambda t: fn(t, metadata)), value)
    return value.float().numpy()


def _check_expressible(path: Path, arch: Architecture, metadata: dict, shapes: dict, cfg, head: str) -> None:
    """Refuse a model that the file would read back as another one (see the module's docstring)."""
    from ..save import as_saved

    planned = _Planned(path, {"general.architecture": arch.model_type} | metadata, shapes)
    hf = hf_config(planned, arch)
    preset = preset_for(arch.model_type)
    back, want = preset.config(hf, head), as_saved(cfg, head)
    for field in dataclasses.fields(want):
        if field.name in _INERT:
            continue
        if getattr(back, field.name) != getattr(want, field.name):
            raise LmatlasError(
                f"GGUF's {arch.model_type} layout cannot express the model's {field.name}="
                f"{getattr(want, field.name)!r} (it would read back as {getattr(back, field.name)!r})"
            )


def _tensor_type(gguf, name: str, w: np.ndarray, dtype: str):
    """(data, raw type or None) for ``w`` in ``dtype``. Vectors (norms, biases) stay float32 as
    llama.cpp keeps them; a Q8_0 matrix whose rows are not whole blocks of 32 goes in float16."""
    if w.ndim == 1 or dtype == "f32":
        return np.ascontiguousarray(w, dtype=np.float32), None
    if dtype == "q8_0" and w.shape[-1] % 32 == 0:
        q = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), q), q
    return np.ascontiguousarray(w, dtype=np.float16), None


def write_gguf(model, path: str | os.PathLike, tokenizer=None, dtype: str = "f16", name: str | None = None) -> Path:
    """Write ``model`` (an ``LmatlasModel`` with a causal-LM head) as the GGUF file ``path``:
    matrices in ``dtype`` (f32, f16 or q8_0), the tokenizer (an lmatlas ``Tokenizer``, byte-level
    BPE) and its chat template in the metadata when given."""
    import gguf

    from ..save import hf_config as config_json
    from ..save import hf_state_dict

    path = Path(path)
    if path.is_dir():
        raise LmatlasError(f"{path} is a folder; give the path of the .gguf file to write")
    if not path.parent.is_dir():
        raise LmatlasError(f"{path.parent}: no such folder to write {path.name} into")
    if dtype not in DTYPES:
        raise LmatlasError(f"dtype {dtype!r} cannot be written to GGUF; use one of {', '.join(DTYPES)}")
    cfg, head = model.config, model.head_name
    if cfg.model_type not in WRITABLE:
        raise LmatlasError(
            f"lmatlas writes GGUF files of the architectures {', '.join(WRITABLE)}, not {cfg.model_type}"
        )
    if head != "causal-lm":
        raise LmatlasError(f"GGUF holds language models: the model's head is {head}, not causal-lm")
    arch = ARCHITECTURES[cfg.model_type]
    hf = config_json(cfg, head)
    state = hf_state_dict(model)
    prefix = preset_for(cfg.model_type).prefix + "."
    names = _gguf_names(arch, state, prefix)
    metadata = _metadata(arch, hf, cfg)
    shapes = {stored: tuple(state[ours].shape) for ours, (stored, _) in names.items()}
    _check_expressible(path, arch, metadata, shapes, cfg, head)

    writer = gguf.GGUFWriter(str(path), arch.model_type)
    writer.add_name(name or cfg.model_type)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])  # fmt: skip
    if dtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in metadata.items():
        float_valued = key.endswith(("freq_base", "epsilon"))
        value_type = gguf.GGUFValueType.FLOAT32 if float_valued else gguf.GGUFValueType.UINT32
        writer.add_key_value(key, float(value) if float_valued else int(value), value_type)
    if tokenizer is not None:
        _write_tokenizer(writer, tokenizer, cfg.vocab_size)
    for ours, (stored, fn) in names.items():
        data, raw = _tensor_type(gguf, stored, _stored(state[ours], fn, metadata), dtype)
        writer.add_tensor(stored, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _pre_tokenizer_name(backend) -> str | None:
    """The ``tokenizer.ggml.pre`` name of the backend's pre-tokenizer, among those lmatlas reads."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models

    have = json.loads(backend.to_str())["pre_tokenizer"]
    for name, build in PRE_TOKENIZERS.items():
        probe = RustTokenizer(models.BPE())
        probe.pre_tokenizer = build()
        if json.loads(probe.to_str())["pre_tokenizer"] == have:
            return name
    return None


def _write_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """A byte-level BPE tokenizer as ``tokenizer.ggml.*`` metadata (kind gpt2), as llama.cpp's
    converter writes it: every token by id with its type, the merges, the special ids and flags."""
    backend = tokenizer.backend_tokenizer
    spec = json.loads(backend.to_str())
    model = spec["model"]
    pre = _pre_tokenizer_name(backend)
    if model.get("type") != "BPE" or model.get("byte_fallback") or pre is None:
        raise LmatlasError(
            "the tokenizer is not a byte-level BPE with a pre-tokenizer GGUF names "
            f"({', '.join(PRE_TOKENIZERS)}); lmatlas writes only those to GGUF"
        )
    vocab = tokenizer.get_vocab()
    tokens = [None] * max(len(vocab), vocab_size)
    for token, i in vocab.items():
        tokens[i] = token
    types = [NORMAL] * len(tokens)
    for i, added in backend.get_added_tokens_decoder().items():
        types[i] = CONTROL if added.special else USER_DEFINED
    for i, token in enumerate(tokens):
        if token is None:  # rows of the embeddings no token reaches (a padded vocabulary)
            tokens[i], types[i] = f"[PAD{i}]", USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if tokenizer.unk_token_id is not None:  # bos, eos and padding come with the model's config
        writer.add_unk_token_id(tokenizer.unk_token_id)
    # Whether bos / eos surround a text: what the tokenizer does to one.
    ids = backend.encode("a").ids
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id)
    template = tokenizer.chat_template
    if isinstance(template, dict):
        writer.add_chat_template([{"name": k, "template": v} for k, v in template.items()])
    elif template:
        writer.add_chat_template(template)
