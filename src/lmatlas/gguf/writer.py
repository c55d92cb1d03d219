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
from .reader import GGUFMetadata
from .tokenizer import BYTE, CONTROL, NORMAL, NORMALIZERS, PRE_TOKENIZERS, UNKNOWN, USER_DEFINED, merges_from_scores, spm_normalizer

# The architectures lmatlas writes: all it reads (a layout outside them is refused on writing).
WRITABLE = tuple(ARCHITECTURES)
DTYPES = ("f32", "f16", "q8_0")
# ModelConfig fields that do not change what the model computes.
_INERT = {
    "hf_config", "generation", "hidden_dropout", "attention_dropout", "id2label", "num_labels", "problem_type",
    "architectures", "pad_token_id", "bos_token_id", "eos_token_id", "classifier_activation", "mlm_activation",
}  # fmt: skip


class _Planned(GGUFMetadata):
    """The metadata and tensor shapes of a file about to be written, read back by the reader's
    own ``hf_config`` before anything is written."""

    def __init__(self, path: Path, metadata: dict[str, Any], tensors: dict[str, tuple[int, ...]]):
        self.path, self.metadata, self.tensors = path, metadata, tensors

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


def _tensor_type(gguf, w: np.ndarray, dtype: str):
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
    matrices in ``dtype`` (f32, f16 or q8_0), the tokenizer (an lmatlas ``Tokenizer``: byte-level
    or SentencePiece BPE) and its chat template in the metadata when given."""
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
        data, raw = _tensor_type(gguf, _stored(state[ours], fn, metadata), dtype)
        writer.add_tensor(stored, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _same_step(backend, part: str, candidate) -> bool:
    """Whether the backend's ``part`` (pre_tokenizer, normalizer) is ``candidate``."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models

    probe = RustTokenizer(models.BPE())
    setattr(probe, part, candidate)
    return json.loads(backend.to_str())[part] == json.loads(probe.to_str())[part]


def _bytelevel_fields(writer, backend, model: dict) -> None:
    """Kind gpt2: the merges and the name of the pre-tokenizer."""
    pre = next((name for name, build in PRE_TOKENIZERS.items() if _same_step(backend, "pre_tokenizer", build())), None)
    normalizer = NORMALIZERS.get(pre)
    same_normalizer = backend.normalizer is None if normalizer is None else _same_step(backend, "normalizer", normalizer())
    if pre is None or not same_normalizer:
        raise LmatlasError(
            f"the tokenizer's byte-level BPE splits text in a way GGUF does not name (it names {', '.join(PRE_TOKENIZERS)}); "
            "lmatlas writes only those to GGUF"
        )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])


def _sentencepiece_fields(writer, backend, model: dict, tokens: list[str], types: list[int]) -> None:
    """Kind llama (SentencePiece BPE): scores in place of merges. A SentencePiece vocabulary
    ranks its pieces by score, and its ids follow the scores, so the score of a token is minus
    its id; the merges the reader derives from them must rank the tokenizer's own merges in
    their order, else the file would tokenize differently: refused."""
    prefix = next((p for p in (True, False) if _same_step(backend, "normalizer", spm_normalizer(p))), None)
    if prefix is None or backend.pre_tokenizer is not None:
        raise LmatlasError(
            "the tokenizer's SentencePiece BPE marks spaces in a way other than GGUF's llama tokenizer "
            "(spaces replaced by \"▁\" in its normalizer); lmatlas does not write it to GGUF"
        )
    scores = [-float(i) for i in range(len(tokens))]
    derived = merges_from_scores(tokens, scores)
    # The derived merges of one token come together, in an order of their own (the parts'
    # scores); across tokens they must keep the tokenizer's order.
    first = {}
    for rank, (left, right) in enumerate(derived):
        first.setdefault(left + right, rank)
    pairs = set(derived)
    own = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    order = [first["".join(pair)] if pair in pairs else -1 for pair in own]
    if -1 in order or order != sorted(order):
        raise LmatlasError(
            "the tokenizer's merges do not follow the order of its token ids, which a GGUF "
            "SentencePiece vocabulary (scores, no merges) cannot express"
        )
    for i, token in enumerate(tokens):
        if types[i] == NORMAL and re.fullmatch(r"<0x[0-9A-F]{2}>", token):
            types[i] = BYTE
    if model.get("unk_token") in tokens:
        types[tokens.index(model["unk_token"])] = UNKNOWN
    writer.add_tokenizer_model("llama")
    writer.add_token_scores(scores)
    writer.add_add_space_prefix(prefix)


def _added_around(backend) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text's own (of a text it has tokens for)."""
    for text in ("a", "e", "0", ".", " "):
        full, own = backend.encode(text).ids, backend.encode(text, add_special_tokens=False).ids
        starts = [i for i in range(len(full) - len(own) + 1) if full[i : i + len(own)] == own]
        if own and starts:
            return full[: starts[0]], full[starts[0] + len(own) :]
    return [], []


def _write_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """The tokenizer as ``tokenizer.*`` metadata, as llama.cpp's converter writes it: every token
    by id with its type, the merges (byte-level BPE, kind gpt2) or scores (SentencePiece BPE with
    byte fallback, kind llama), the unknown token, the bos / eos flags and the chat template."""
    backend = tokenizer.backend_tokenizer
    model = json.loads(backend.to_str())["model"]
    if model.get("type") != "BPE":
        raise LmatlasError(
            f"the tokenizer is a {model.get('type')} model, not a byte-level or SentencePiece BPE; "
            "lmatlas writes only those to GGUF"
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
    if model.get("byte_fallback"):
        _sentencepiece_fields(writer, backend, model, tokens, types)
    else:
        _bytelevel_fields(writer, backend, model)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if tokenizer.unk_token_id is not None:  # bos, eos and padding come with the model's config
        writer.add_unk_token_id(tokenizer.unk_token_id)
    # Whether bos / eos surround a text: what the tokenizer does to one.
    before, after = _added_around(backend)
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and before == [tokenizer.bos_token_id])
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and after == [tokenizer.eos_token_id])
    template = tokenizer.chat_template
    if isinstance(template, dict):
        writer.add_chat_template([{"name": k, "template": v} for k, v in template.items()])
    elif template:
        writer.add_chat_template(template)
