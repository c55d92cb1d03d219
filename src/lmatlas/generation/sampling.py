"""Greedy decoding and multinomial sampling: one token per row per step."""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from .. import runtime
from .processors import Processors
from .run import Run, next_scores, positions


def choose(scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row, (rows,), from its processed scores: the most likely, or one
    drawn from the softmax (with ``generator`` when given). The server's batch (``lmatlas.serve``)
    picks its tokens here too."""
    if do_sample:
        probs = F.softmax(scores, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
    return torch.argmax(scores, dim=-1)


def sample_steps(run: Run) -> Iterator[torch.Tensor]:
    """Greedy and multinomial sampling, one token per row per step: yields the sequences after
    each step (the caller may stop early)."""
    s, model = run.s, run.model
    n = s.num_return_sequences if s.do_sample else 1
    ids, mask = run.expand(n)  # (batch, L) -> (batch * n, L): n samples of each prompt
    rows, L = ids.shape
    max_length = s.max_length
    keep = 1
    processors = Processors(s, L, keep)
    streamer = run.streamer
    if streamer is not None:
        streamer.put(ids.cpu())
    if max_length <= L:
        if streamer is not None:
            streamer.end()
        yield ids
        return
    # (rows, max_length), filled step by step; the loop yields its first cur columns
    seqs = torch.full((rows, max_length), s.pad_token_id if s.pad_token_id is not None else 0, dtype=torch.long)
    seqs[:, :L] = ids
    full_mask = torch.ones((rows, max_length), dtype=torch.long)
    full_mask[:, :L] = mask
    pos = positions(mask)
    next_pos = pos[:, -1:] + 1
    cache = run.new_cache(rows, max_length, s.use_cache)
    unfinished = torch.ones(rows, dtype=torch.bool)
    pad = torch.tensor(s.pad_token_id if s.pad_token_id is not None else 0)
    cur = L
    scores = next_scores(model, ids, mask, pos, cache)
    threads = runtime.StepThreads()
    try:
        while True:
            scores = processors(seqs[:, :cur], scores)
            tokens = choose(scores, s.do_sample, run.generator)
            if run.eos is not None or run.stop is not None:
                tokens = torch.where(unfinished, tokens, pad)
            seqs[:, cur] = tokens
            cur += 1
            if streamer is not None:
                streamer.put(tokens.cpu())
            finished = run.hits_eos(tokens)
            if run.stop is not None:
                finished |= run.stop(seqs[:, :cur], unfinished)
            unfinished &= ~finished
            yield seqs[:, :cur]
            if cur >= max_length or not bool(unfinished.any()):
                break
            if run.window is not None and cur >= run.window:
                # The window is full: the last ``window`` tokens, at positions counted from its start.
                lo = cur - run.window
                scores = next_scores(model, seqs[:, lo:cur], full_mask[:, lo:cur], positions(full_mask[:, lo:cur]), None)
            elif s.use_cache:
                step = tokens[:, None]  # (rows, 1): only the new token, the cache holds the rest
                scores = threads.run(lambda: next_scores(model, step, full_mask[:, :cur], next_pos, cache))
            else:
                p = positions(full_mask[:, :cur])
                scores = next_scores(model, seqs[:, :cur], full_mask[:, :cur], p, cache)
            next_pos = next_pos + 1
    finally:
        threads.restore()
        if streamer is not None:
            streamer.end()
