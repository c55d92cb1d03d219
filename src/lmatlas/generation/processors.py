"""Logits processors, in transformers' order (``LogitsProcessorList`` as ``generate()`` builds
it in 4.57): repetition penalty, no-repeat n-grams, bad words, minimum length, minimum new
tokens, forced BOS (mBART's target language), forced EOS, then (sampling only) temperature,
top-k, top-p.

Each takes the sequences so far (rows, length) and the float32 scores (rows, vocab) and returns
new scores (rows, vocab).
"""

from __future__ import annotations

import math

import torch

from .settings import GenerationSettings, eos_list

NEG_INF = -math.inf


def repetition_penalty(ids: torch.Tensor, scores: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty on tokens already present (prompt included): divide positive scores, multiply
    negative ones."""
    seen = torch.gather(scores, 1, ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, ids, seen)


def occurrence_penalty(generated: torch.Tensor, scores: torch.Tensor, presence: float, frequency: float) -> torch.Tensor:
    """OpenAI's presence and frequency penalties (the server's ``presence_penalty`` and
    ``frequency_penalty``): subtract ``presence`` from the score of every token already generated
    and ``frequency`` times its count; the prompt does not count. ``generated``: (rows, n) ids."""
    if generated.shape[1] == 0:
        return scores
    counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
    return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)


def no_repeat_ngram(ids: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid any token that would complete an n-gram already in the sequence."""
    length = ids.shape[1]
    if length + 1 < n:
        return scores
    scores = scores.clone()
    for row, seq in enumerate(ids.tolist()):
        prefix = tuple(seq[length + 1 - n :]) if n > 1 else ()
        banned = [seq[i + n - 1] for i in range(length - n + 1) if tuple(seq[i : i + n - 1]) == prefix]
        if banned:
            scores[row, banned] = NEG_INF
    return scores


def bad_words(ids: torch.Tensor, scores: torch.Tensor, words: list[tuple[int, ...]]) -> torch.Tensor:
    """Forbid the last token of each banned sequence where the sequence so far ends with the rest
    of it (single tokens: always), as transformers' NoBadWordsLogitsProcessor."""
    scores = scores.clone()
    single = [w[0] for w in words if len(w) == 1]
    if single:
        scores[:, single] = NEG_INF
    length = ids.shape[1]
    for w in words:
        if len(w) == 1 or len(w) > length:
            continue
        prefix = torch.tensor(w[:-1], dtype=ids.dtype, device=ids.device)
        rows = torch.eq(ids[:, -(len(w) - 1) :], prefix).all(dim=1)
        scores[rows, w[-1]] = NEG_INF
    return scores


def force(scores: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Only ``tokens`` remain possible (score 0, everything else -inf)."""
    forced = torch.full_like(scores, NEG_INF)
    forced[:, tokens] = 0.0
    return forced


def forbid(scores: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    # In place: the processors own the scores they are given (see ``Processors.__call__``).
    scores[:, tokens] = NEG_INF
    return scores


def top_k_filter(scores: torch.Tensor, k: int, keep: int = 1) -> torch.Tensor:
    k = min(max(k, keep), scores.shape[-1])
    threshold = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < threshold, NEG_INF)


def top_p_filter(scores: torch.Tensor, p: float, keep: int = 1) -> torch.Tensor:
    """Nucleus sampling: keep the smallest set of most likely tokens whose probability exceeds p."""
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - p)
    remove[..., -keep:] = False
    return scores.masked_fill(remove.scatter(1, order, remove), NEG_INF)


class Processors:
    """The logits processors that ``settings`` switch on."""

    def __init__(self, s: GenerationSettings, prompt_length: int, keep: int):
        self.s = s
        self.eos = eos_list(s.eos_token_id)
        self.prompt_length = prompt_length
        self.keep = keep
        # transformers never bans EOS itself as a bad word.
        words = [tuple(w) for w in s.bad_words_ids or []]
        self.bad_words = [w for w in words if not (len(w) == 1 and w[0] in self.eos)]

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The processed scores. ``scores`` may be written into: the decoding loops pass each
        step's fresh scores, which nothing else reads (a copy of the vocabulary-wide row per step
        is a measurable part of a decoding step's bookkeeping)."""
        s = self.s
        length = ids.shape[1]
        if s.repetition_penalty != 1.0:
            scores = repetition_penalty(ids, scores, s.repetition_penalty)
        if s.no_repeat_ngram_size and s.no_repeat_ngram_size > 0:
            scores = no_repeat_ngram(ids, scores, s.no_repeat_ngram_size)
        if self.bad_words:
            scores = bad_words(ids, scores, self.bad_words)
        if self.eos and s.min_length > 0 and length < s.min_length:
            scores = forbid(scores, self.eos)
        if self.eos and s.min_new_tokens and length - self.prompt_length < s.min_new_tokens:
            scores = forbid(scores, self.eos)
        if s.forced_bos_token_id is not None and length == 1:
            scores = force(scores, [s.forced_bos_token_id])
        if s.forced_eos_token_id is not None and length == s.max_length - 1:
            scores = force(scores, eos_list(s.forced_eos_token_id))
        if s.do_sample:
            if s.temperature != 1.0:
                scores = scores / s.temperature
            if s.top_k:
                scores = top_k_filter(scores, s.top_k, self.keep)
            if s.top_p < 1.0:
                scores = top_p_filter(scores, s.top_p, self.keep)
        return scores
