"""`lmatlas generate`: continue a prompt with a decoder, or chat with one that has a template;
with an encoder-decoder (BART, T5, Marian, mBART, Pegasus), turn the text into its output:
summarise, translate, text-to-text."""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import LmatlasError
from ._generation import add_sampling_options, generation_options, generative_kind


HELP = (
    "continue a prompt with a decoder (GPT-2, Llama...), or summarise / translate with an "
    "encoder-decoder (BART, T5, Marian, mBART, Pegasus)"
)
DESCRIPTION = (
    "Print the continuation of PROMPT (a decoder), or what an encoder-decoder makes of "
    "it: a summary, a translation, T5's answer. Greedy by default (or as the model's "
    "generation_config.json says); --temperature, --top-k or --top-p sample."
)


def arguments(p) -> None:
    """The arguments of `lmatlas generate`, on its parser (made by ``lmatlas.cli``)."""
    p.add_argument("prompt", nargs="?", help="the prompt; - reads it from standard input; with --chat, "
                   "the user's message (without one, --chat asks for messages in turn)")
    p.add_argument("--model", "-m", default=None,
                   help="model folder, GGUF file or hub id (default: SmolLM2-135M-Instruct, installed as a package)")
    add_sampling_options(p, "at most this many new tokens (default: 50 for a decoder; an encoder-decoder's "
                         "generation_config.json says, like transformers)")
    p.add_argument("--num-beams", type=int, default=None, help="beam search with this many beams")
    p.add_argument("--num-return-sequences", type=int, default=None)
    p.add_argument("--length-penalty", type=float, default=None,
                   help="beam search: scores divided by length ** this (> 0 favours longer outputs)")
    p.add_argument("--src-lang", default=None, help="mBART: the language code of the text (e.g. en_XX)")
    p.add_argument("--tgt-lang", default=None, help="mBART: the language code to translate into (e.g. ro_RO)")
    p.add_argument("--stream", action="store_true", help="print the text as it is generated")
    p.add_argument("--chat", action="store_true", help="treat the prompt as a chat message (needs a chat template)")
    p.add_argument("--system", default=None, help="with --chat: a system message first")
    p.add_argument("--sliding-window", action=argparse.BooleanOptionalAction, default=None,
                   help="past the positions of a model with absolute positions (GPT, GPT-2, OPT...), read the "
                   "last positions' worth of tokens, as nanoGPT (default: on, with a notice, when the text "
                   "would not fit)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..chat import template_of
    from ..conversation import Conversation
    from ._generation import dropped_notice
    from ._generation import model_source, quantization
    from ..loader import load
    from ..tokenizer import load_tokenizer

    if args.system is not None and not args.chat:
        raise LmatlasError("--system is the system message of a chat; add --chat")
    folder = model_source(args.model)
    seq2seq = generative_kind(folder, args.model) == "encoder-decoder"
    if seq2seq and args.chat:
        raise LmatlasError("--chat is for decoder models with a chat template; this is an encoder-decoder")
    # The tokenizer first: a chat without a template fails before the weights load.
    tokenizer = load_tokenizer(folder)
    if args.chat:
        template_of(tokenizer)
    prompt = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read()
    if prompt is None and not args.chat:
        raise LmatlasError("give a PROMPT (or - to read it from standard input)")
    model = load(folder, head="seq2seq-lm" if seq2seq else "causal-lm", dtype=args.dtype, **quantization(args))
    options = generation_options(args, tokenizer)
    if not seq2seq:
        # The command's own default, under the model's settings as any default (generation.settings).
        options["generation_config"] = {"max_new_tokens": 50}
    options |= _languages(args, tokenizer)
    options |= _sliding(args, model, tokenizer, prompt, options)
    if not args.chat:
        _answer(model, tokenizer, tokenizer.encode(prompt), options, args.stream)
        return 0
    chat = Conversation(model, tokenizer, args.system, options, on_drop=dropped_notice)
    for text in [prompt] if prompt is not None else _ask():
        chat.answered(_answer(model, tokenizer, chat.ask(text), options, args.stream)[0])
    return 0


def _sliding(args, model, tokenizer, prompt: str | None, options: dict) -> dict:
    """``sliding_window`` for generate(): as --sliding-window says, or, by default, on (with a
    notice) when the prompt and the new tokens would outgrow the model's positions."""
    if args.sliding_window is not None:
        return {"sliding_window": args.sliding_window}
    limit = model.config.usable_positions
    if limit is None or getattr(model, "is_encoder_decoder", False) or args.chat or prompt is None:
        return {}
    new = options.get("max_new_tokens", options.get("generation_config", {}).get("max_new_tokens", 0))
    length = len(tokenizer.encode(prompt))
    if length + new <= limit or length > limit:
        return {}
    warnings.warn(f"the model reads {limit} positions: past them each token is read from the last {limit} "
                  "(a sliding window, as nanoGPT); --no-sliding-window refuses instead")
    return {"sliding_window": True}


def _languages(args, tokenizer) -> dict:
    """mBART's source and target languages: the source code goes around the text; the target
    code starts the output, as the translation pipeline does it."""
    from ..generation.language import language_code, target_language

    if args.src_lang is None and args.tgt_lang is None:
        return {}
    if tokenizer.language_layout is None:
        raise LmatlasError("--src-lang and --tgt-lang are for mBART models; this tokenizer has no language codes")
    if args.src_lang is not None:
        tokenizer.src_lang = language_code(tokenizer, args.src_lang, "--src-lang")
    if args.tgt_lang is None:
        return {}
    return target_language(tokenizer, args.tgt_lang, "--tgt-lang")


def _ask():
    while True:
        try:
            line = input("> ")
        except EOFError:
            return
        if line.strip():
            yield line


def _answer(model, tokenizer, ids: list[int], options: dict, streaming: bool) -> list[str]:
    import torch

    from ..generation import stream

    if not ids:
        raise LmatlasError("the prompt is empty")
    prompt = torch.tensor([ids])
    beams = options.get("num_beams", 1) > 1 or options.get("num_return_sequences", 1) > 1
    if streaming and not beams:
        pieces = []
        for piece in stream(model, tokenizer, prompt, **options):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return ["".join(pieces)]
    out = model.generate(prompt, **options)
    # A decoder's output starts with the prompt; an encoder-decoder's with the decoder start token.
    skip = 1 if getattr(model, "is_encoder_decoder", False) else len(ids)
    texts = [tokenizer.decode(row[skip:].tolist(), skip_special_tokens=True) for row in out]
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- {i + 1}")
        print(text)
    return texts
