"""The generation flags that `lmatlas generate` and `lmatlas chat` share, and how they become
``generate()``'s arguments."""

from __future__ import annotations

from ..errors import LmatlasError
from ._flags import dashed

# The flags named as generate()'s arguments pass through as they are.
_GENERATE_ARGUMENTS = (
    "max_new_tokens", "min_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size",
    "num_beams", "num_return_sequences", "length_penalty", "seed",
)  # fmt: skip


def add_sampling_options(p, max_new_tokens_help: str) -> None:
    """The length, sampling and stopping flags (and, for messages, the arguments they set)."""
    p.set_defaults(flags={**dashed(_GENERATE_ARGUMENTS), **dashed(["sliding_window"]), "do_sample": "--sample",
                          "stop_strings": "--stop"})
    p.add_argument("--max-new-tokens", type=int, default=None, help=max_new_tokens_help)
    p.add_argument("--min-new-tokens", type=int, default=None)
    p.add_argument("--sample", action="store_true", help="sample instead of taking the most likely token")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (implies --sample)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens (implies --sample)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (implies --sample)")
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--no-repeat-ngram-size", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, metavar="TEXT", help="stop after this text (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling: the same seed gives the same text")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="weights' precision")
    add_quantization_options(p)


def add_quantization_options(p) -> None:
    """--quantize and --dequantize: how the model's matrices are held (``lmatlas.load``'s arguments)."""
    p.add_argument("--quantize", default=None, metavar="TYPE",
                   help="quantize the model's float matrices to q8_0, q4_0 or q4_1 (llama.cpp's blocks) and "
                   "decode with integer kernels")
    p.add_argument("--dequantize", action="store_true",
                   help="a GGUF file's quantized matrices in float32 (by default they stay quantized, as llama.cpp runs them)")


def quantization(args) -> dict:
    """``lmatlas.load``'s quantize and dequantize arguments from the flags."""
    return {"quantize": args.quantize, "dequantize": args.dequantize}


def generation_options(args, tokenizer) -> dict:
    """``generate()``'s arguments for the flags given (None: the model's or the default)."""
    if args.max_new_tokens is not None and args.max_new_tokens < 0:
        raise LmatlasError(f"--max-new-tokens must be >= 0, not {args.max_new_tokens}")
    sampling = args.sample or any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    options = {name: getattr(args, name, None) for name in _GENERATE_ARGUMENTS}
    options.update(do_sample=True if sampling else None, stop_strings=args.stop)
    if args.stop:
        options["tokenizer"] = tokenizer
    return {k: v for k, v in options.items() if v is not None}


def model_source(model: str | None):
    """Where the model of `generate` or `chat` is: a GGUF file, a folder, or the default model."""
    from ..checkpoint import resolve
    from ..defaults import generative_model
    from ..gguf import find_gguf

    if model is None:
        return generative_model()
    return find_gguf(model) or resolve(model)


def generative_kind(source, model: str | None) -> str:
    """The skeleton of the model at ``source`` (a folder or a GGUF file), which must generate
    text: "decoder" or "encoder-decoder". An encoder is named as what it is, not as a head it lacks."""
    from pathlib import Path

    from ..checkpoint import read_config
    from ..presets import preset_for

    if not Path(source).is_dir():
        return "decoder"  # a GGUF file
    hf = read_config(Path(source))
    preset = preset_for(hf.get("model_type"), str(Path(source) / "config.json"))
    if preset.skeleton == "encoder":
        raise LmatlasError(
            f"--model {model or source}: {hf.get('model_type')} is an encoder, which reads text but cannot write it; "
            "give a decoder (GPT-2, Llama, SmolLM2...) or an encoder-decoder (T5, BART, Marian...)"
        )
    return preset.skeleton


def dropped_notice(exchanges: int) -> None:
    """What the user reads when a chat outgrows the model's positions."""
    import warnings

    warnings.warn(f"the conversation outgrew the model's context: its oldest {exchanges} exchange(s) are forgotten")


__all__ = ["add_sampling_options", "dropped_notice", "generation_options", "generative_kind", "model_source"]
