"""`lmatlas convert MODEL --to gguf|hf`: write a model lmatlas loads (a Hugging Face folder, a
GGUF file, a fine-tuned checkpoint) in the other format."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import LmatlasError

HELP = "write a model as a GGUF file (for llama.cpp-based tools) or as a Hugging Face folder"
DESCRIPTION = (
    "Write MODEL (a folder, GGUF file or hub id) as a GGUF file with its tokenizer and chat "
    "template (--to gguf; llama, qwen2, gpt2, bloom and falcon; matrices in --dtype f32, f16 "
    "or q8_0), or as a Hugging Face folder (--to hf)."
)


def arguments(p) -> None:
    """The arguments of `lmatlas convert`, on its parser (made by ``lmatlas.cli``)."""
    p.add_argument("model", metavar="MODEL", help="model folder, GGUF file or hub id")
    p.add_argument("--to", required=True, choices=("gguf", "hf"), help="the format to write")
    p.add_argument("--dtype", default=None, help="--to gguf: f32, f16 (default) or q8_0 for the matrices")
    p.add_argument("-o", "--output", default=None,
                   help="the file (gguf) or folder (hf) to write (default: MODEL's name, in the current folder)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..gguf import find_gguf
    from ..gguf import write_gguf
    from ..loader import load
    from ..save import copy_tokenizer, save_model, save_tokenizer
    from ..tokenizer import load_tokenizer

    if args.to == "hf" and args.dtype is not None:
        raise LmatlasError("--dtype is for --to gguf; a Hugging Face folder is written in float32")
    dtype = args.dtype or "f16"
    name = Path(args.model).name.removesuffix(".gguf") or "model"
    out = Path(args.output) if args.output else Path(f"{name}.{dtype}.gguf" if args.to == "gguf" else f"{name}-hf")
    if args.to == "hf" and out.is_file():
        raise LmatlasError(f"-o {out} is a file; a Hugging Face model is written as a folder")
    model = load(args.model, dequantize=True)  # written anew in --dtype
    try:
        tokenizer = load_tokenizer(args.model)
    except LmatlasError as e:
        warnings.warn(f"writing the model without a tokenizer ({e})")
        tokenizer = None
    if args.to == "gguf":
        write_gguf(model, out, tokenizer=tokenizer, dtype=dtype, name=name)
    else:
        save_model(model, out)
        if tokenizer is not None:
            if find_gguf(args.model) is None and Path(args.model).is_dir():
                copy_tokenizer(args.model, out)  # the files as they are
            else:
                save_tokenizer(tokenizer, out)
    print(out)
    return 0
