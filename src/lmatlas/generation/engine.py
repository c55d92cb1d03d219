"""The public entry points: ``generate()`` for a batch, ``stream()`` for text as it comes."""

from __future__ import annotations

from typing import Iterator

import torch

from .. import runtime
from ..errors import LmatlasError
from .beam_search import beam_search
from .run import Run
from .sampling import sample_steps


def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """Prompts + new tokens, (batch x num_return_sequences, length), as transformers returns.

    Arguments as transformers' ``generate()``: ``max_new_tokens`` (or ``max_length``),
    ``min_new_tokens``, ``min_length``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``,
    ``repetition_penalty``, ``no_repeat_ngram_size``, ``num_beams``, ``length_penalty``,
    ``early_stopping``, ``num_return_sequences``, ``eos_token_id`` (one or a list),
    ``pad_token_id``, ``stop_strings`` (with ``tokenizer=``), ``streamer`` (an object with
    ``put(ids)`` and ``end()``, as transformers' streamers), ``generation_config`` (a dict of
    defaults that the model's generation_config.json may fill in, as transformers' argument; see
    ``generation.settings``). lmatlas adds ``seed``: sampling from its own generator,
    reproducible whatever else uses torch's global one; and ``sliding_window=True``: a decoder
    with absolute positions (GPT, GPT-2, OPT...) goes on past them, each new token read from the
    last positions' worth of tokens, as nanoGPT's ``generate()`` crops its context (greedy and
    sampling; without it, a length beyond the positions is refused, as transformers does).
    """
    with torch.inference_mode():
        run = Run(model, input_ids, attention_mask, dict(kwargs))
        with runtime.decoding(model, run.rows):
            if run.s.num_beams > 1:
                return beam_search(run)
            ids = None
            for ids in sample_steps(run):
                pass
            return ids


def stream(model, tokenizer, prompt: str | torch.Tensor, **kwargs) -> Iterator[str]:
    """Yield the new text piece by piece as it is generated (one prompt; greedy or sampling).

    Pieces end on whole characters: a byte-level token holding half a UTF-8 character waits for
    the rest.
    """
    if isinstance(prompt, str):
        ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    else:
        ids = prompt
    if ids.shape[0] != 1:
        raise LmatlasError("stream() takes one prompt; use generate() for a batch")
    kwargs.setdefault("tokenizer", tokenizer)
    run = Run(model, ids, kwargs.pop("attention_mask", None), dict(kwargs))
    if run.s.num_beams > 1:
        raise LmatlasError("stream() decodes greedily or by sampling; beam search (num_beams > 1) cannot stream")
    shown = ""
    L = run.prompt_length
    for seq in sample_steps(run):
        text = tokenizer.decode(seq[0, L:].tolist(), skip_special_tokens=True)
        if text.endswith("\ufffd"):
            continue  # half a character so far
        if text.startswith(shown):
            if len(text) > len(shown):
                yield text[len(shown) :]
        shown = text  # (a re-segmentation that changes earlier text is not shown again)
