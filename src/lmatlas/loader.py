"""Files -> config + tensors -> model: the loading stage, and nothing else."""

from __future__ import annotations

import os
import warnings

import torch

from .checkpoint import Weights, read_config, resolve, resolve_file
from .files import read_json
from .config import ModelConfig
from .errors import LmatlasError
from .gguf import find_gguf
from .gguf import read_model as read_gguf
from .heads import HEADS
from .model import LmatlasModel
from .presets import head_from_architectures, preset_for
from .presets._maps import Derived, FirstOf
from .quantization import install_blocks, kept_blocks, linear_holders, quantize_model
from .runtime.quant_formats import quant_type

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
        raise LmatlasError(f"dtype {dtype} is not supported; use float32, bfloat16 or float16")
    if dtype not in DTYPES:
        raise LmatlasError(f"dtype {dtype!r} is not supported; use float32, bfloat16 or float16")
    return DTYPES[dtype]


def load(
    path_or_id: str | os.PathLike,
    head: str | None = None,
    dtype: str | torch.dtype | None = None,
    gguf_file: str | None = None,
    quantize: str | None = None,
    dequantize: bool = False,
) -> LmatlasModel:
    """A model from a Hugging Face folder or hub id, or a GGUF file (or a folder holding one), in
    eval mode.

    ``head`` is one of ``lmatlas.heads.HEADS``; by default the one that
    ``config.architectures[0]`` names. ``dtype``: float32 (default), bfloat16 or float16 (of the
    float weights). ``gguf_file``: as transformers' argument, the GGUF file to take from a folder
    or a hub id.

    Quantized matrices (``lmatlas.quantization``): a GGUF file's Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K
    matrices stay in their blocks (as llama.cpp runs them; a forward pass gives the dequantized model's numbers,
    a decode takes the runtime's integer kernels), unless ``dequantize=True``, which makes every
    matrix float32 (as transformers loads a GGUF file; training needs it). ``quantize``: q8_0,
    q4_0 or q4_1, the type the model's float matrices are quantized to, in llama.cpp's blocks.
    """
    if gguf_file is not None:
        path_or_id = resolve_file(path_or_id, gguf_file)
    gguf_file = find_gguf(path_or_id)
    if gguf_file is not None:
        # The file's metadata stands for config.json; its tensors are read under transformers' names.
        hf, weights = read_gguf(gguf_file)
        source, folder = str(gguf_file), None
    else:
        folder = resolve(path_or_id)
        hf = read_config(folder)
        source = str(folder / "config.json")
    preset = preset_for(hf.get("model_type"), source)
    if head is None:
        head = head_from_architectures(preset, hf.get("architectures") or [], source)
    elif head not in HEADS or head not in preset.head_names():
        known = ", ".join(sorted(preset.head_names()))
        raise LmatlasError(f"head {head!r} is not available for {hf['model_type']}; choose one of {known}")
    torch_dtype = parse_dtype(dtype)
    kind = None if quantize is None else quant_type(quantize)
    if folder is not None:
        weights = Weights(folder)
        if preset.stored_name is not None:
            weights.rename(lambda name: preset.stored_name(hf["model_type"], name))
    try:
        cfg = preset.config(hf, head)
    except (KeyError, TypeError, ValueError) as e:
        raise LmatlasError(f"{source}: cannot be read as a {hf['model_type']} config ({e})") from None
    cfg = _drop_absent_pooler(cfg, preset, head, weights)
    if preset.ties is not None:
        cfg = preset.ties(cfg, head, weights, _prefix(preset, weights))
    generation_file = folder / "generation_config.json" if folder is not None else None
    if generation_file is not None and generation_file.exists():
        cfg.generation = read_json(generation_file)
    with torch.device("meta"):
        model = LmatlasModel(cfg, head)
    # Quantized from the weights as stored (float32), before the dtype rounds them.
    _load_state(model, preset, cfg, head, weights, torch_dtype if kind is None else torch.float32, not dequantize)
    if kind is not None:
        quantize_model(model, kind)
    # Plain PyTorch: the generation engine installs the CPU runtime's kernels for a decode.
    return model.to(torch_dtype).eval()


def _drop_absent_pooler(cfg: ModelConfig, preset, head: str, weights: Weights) -> ModelConfig:
    # A base model read from, say, a masked-LM checkpoint has no pooler weights: leave the
    # pooler out rather than invent one.
    if head == "base" and cfg.pooler_activation:
        backbone, _ = preset.weights(cfg, head)
        prefix = _prefix(preset, weights)
        if prefix + backbone["backbone.pooler.dense.weight"] not in weights:
            return cfg.replace(pooler_activation=None)
    return cfg


def _prefix(preset, weights: Weights) -> str:
    p = preset.prefix + "."
    return p if any(k.startswith(p) for k in weights.keys()) else ""


def _load_state(
    model: LmatlasModel, preset, cfg: ModelConfig, head: str, weights: Weights, dtype: torch.dtype = torch.float32,
    keep_blocks: bool = False,
) -> None:
    backbone, head_map = preset.weights(cfg, head)
    prefix = _prefix(preset, weights)
    names = {ours: _prefixed(theirs, prefix) for ours, theirs in backbone.items()} | head_map
    state: dict[str, torch.Tensor] = {}
    fresh: list[str] = []
    holders = linear_holders(model) if keep_blocks else {}
    kept: dict[str, tuple] = {}  # linear layer -> (format, blocks) of its weight, kept as stored
    for ours, param in model.named_parameters():  # tied parameters appear once
        theirs = names.get(ours)
        if theirs is None:
            raise AssertionError(f"the {cfg.model_type} weight map has no entry for {ours}")
        if isinstance(theirs, FirstOf):
            found = next((n for n in theirs.names if n in weights), None)
            if found is None and theirs.zeros:
                state[ours] = torch.zeros(param.shape, dtype=dtype)
                continue
            found = found or theirs.names[0]  # reported missing below
            theirs = Derived((found,), theirs.fn) if theirs.fn is not None else found
        derive = theirs.fn if isinstance(theirs, Derived) else None
        if derive is not None:
            theirs = theirs.names if len(theirs.names) > 1 else theirs.names[0]
        parts = (theirs,) if isinstance(theirs, str) else theirs
        absent = [p for p in parts if p not in weights]
        if absent:
            if ours.startswith(("head.", "backbone.pooler.")):
                fresh.append(ours)
                continue
            raise LmatlasError(f"{weights.folder}: the checkpoint has no weight {absent[0]}, which {cfg.model_type} needs")
        linears, only_linears = holders.get(id(param), ([], False))
        if linears:
            found = kept_blocks([weights.blocks(p) for p in parts], derive, tuple(param.shape))
            if found is not None:
                kept |= dict.fromkeys(linears, found)
                if only_linears:
                    continue  # the weight of linear layers only: their blocks are all they need
        tensors = [weights.get(p) for p in parts]
        if derive is not None:
            try:
                tensor = derive(*tensors)
            except RuntimeError as e:
                raise LmatlasError(
                    f"{weights.file_of(parts[0])}: weight {parts[0]} has shape {tuple(tensors[0].shape)}, "
                    f"which does not fit config.json ({e})"
                ) from None
        else:
            tensor = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
        if tuple(tensor.shape) != tuple(param.shape):
            raise LmatlasError(
                f"{weights.file_of(parts[0])}: weight {theirs if isinstance(theirs, str) else ' + '.join(parts)} "
                f"has shape {tuple(tensor.shape)}, but config.json implies {tuple(param.shape)}"
            )
        if not tensor.dtype.is_floating_point:
            raise LmatlasError(f"{weights.file_of(parts[0])}: weight {parts[0]} has dtype {tensor.dtype}, not a float")
        state[ours] = tensor.to(dtype).contiguous()
    if fresh:
        # A head the checkpoint lacks (a base model loaded for fine-tuning) starts random.
        warnings.warn(
            f"{weights.folder}: newly initialised (train before use): {', '.join(fresh)}", stacklevel=3
        )
        _init_fresh(model, fresh, state)
    install_blocks(model, kept)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise AssertionError(f"parameters left unloaded: {leftover}")


def _prefixed(theirs, prefix: str):
    if isinstance(theirs, str):
        return prefix + theirs
    if isinstance(theirs, (Derived, FirstOf)):
        return theirs.prefixed(prefix)
    return tuple(prefix + t for t in theirs)


def _init_fresh(model: LmatlasModel, fresh: list[str], state: dict[str, torch.Tensor]) -> None:
    from .blocks import init_weights

    modules = {name.rsplit(".", 1)[0] for name in fresh}
    for name in modules:
        module = model.get_submodule(name)
        module.to_empty(device="cpu")
        init_weights(module, std=0.02)
        for pname, p in module.named_parameters(recurse=False):
            state[f"{name}.{pname}"] = p.detach()

