"""Beam search: transformers' vectorised algorithm (``GenerationMixin._beam_search``, 4.57).

2 x beams candidates per step (more with several EOS tokens); finished hypotheses scored by the
sum of their log-probabilities / (new length ** length_penalty); ``early_stopping`` True / False /
"never" as documented there. The cache is reordered in place to follow each beam's parent.
Shapes: B sources, nb beams, K = the candidates kept per step, V the vocabulary, T = max_length.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .. import runtime
from .processors import Processors
from .run import Run, next_scores, positions


def beam_search(run: Run) -> torch.Tensor:
    """transformers' vectorised beam search (GenerationMixin._beam_search, 4.57), step for step."""
    s, model = run.s, run.model
    nb = s.num_beams
    B = run.input_ids.shape[0]
    ids, mask = run.expand(nb)
    L = ids.shape[1]
    max_length = s.max_length
    vocab = model.config.target_vocab_size
    n_eos = 0 if run.eos is None else run.eos.numel()
    keep_k = max(2, 1 + n_eos) * nb  # K
    top_nb_mask = torch.cat([torch.ones(nb, dtype=torch.bool), torch.zeros(keep_k - nb, dtype=torch.bool)])
    processors = Processors(s, L, keep=1 + n_eos if n_eos else 2)
    if max_length <= L:
        return run.input_ids

    # transformers fills unused slots with pad, or with the first EOS when pad is 0 or unset.
    pad = s.pad_token_id
    fill = (pad if pad else int(run.eos[0])) if run.eos is not None else -1
    running = torch.full((B, nb, max_length), fill, dtype=torch.long)  # (B, nb, T): the beams still going
    running[:, :, :L] = ids.view(B, nb, L)
    sequences = running.clone()  # (B, nb, T): the finished hypotheses, best first
    running_scores = torch.zeros((B, nb))
    running_scores[:, 1:] = -1e9
    beam_scores = torch.full((B, nb), -1e9)
    finished = torch.zeros((B, nb), dtype=torch.bool)
    improvable = torch.ones((B, 1), dtype=torch.bool)
    hits = torch.zeros((B, nb), dtype=torch.bool)
    # (B, nb, T - L): each new token's parent row in the flat (B * nb) batch
    running_idx = torch.full((B, nb, max_length - L), -1, dtype=torch.int32)
    beam_idx = running_idx.clone()
    batch_offset = torch.arange(B).view(-1, 1) * nb

    full_mask = torch.ones((B * nb, max_length), dtype=torch.long)  # (B * nb, T)
    full_mask[:, :L] = mask
    pos = positions(mask)
    next_pos = pos[:, -1:] + 1
    cache = run.new_cache(B * nb, max_length)
    logits = next_scores(model, ids, mask, pos, cache)
    cur = L
    threads = runtime.StepThreads()
    try:
        while True:
            flat = running[:, :, :cur].reshape(B * nb, cur)  # (B, nb, cur) -> (B * nb, cur)
            log_probs = processors(flat, F.log_softmax(logits, dim=-1))
            # (B * nb, V) -> (B, nb, V) + each beam's score -> (B, nb * V): one row of candidates per source
            log_probs = (log_probs.view(B, nb, vocab) + running_scores[:, :, None]).reshape(B, nb * vocab)

            # The best continuations of all beams (sampled without replacement with do_sample).
            if s.do_sample:
                top_idx = torch.multinomial(F.softmax(log_probs, dim=-1), num_samples=keep_k, generator=run.generator)
                top_lp = torch.gather(log_probs, 1, top_idx)
            else:
                top_lp, top_idx = _top_candidates(log_probs, nb, keep_k)
            # top_lp, top_idx: (B, K); the flat index is parent beam * V + token
            parent = torch.div(top_idx, vocab, rounding_mode="floor")
            top_ids = top_idx % vocab
            top_running_idx = _gather(running_idx, parent)
            top_running = _gather(running, parent)  # (B, nb, T) -> (B, K, T)
            top_running[:, :, cur] = top_ids
            top_running_idx[:, :, cur - L] = (parent + batch_offset).to(torch.int32)

            # Which candidates stop here: EOS, a stop string, or the length limit.
            hits = run.hits_eos(top_ids)
            if run.stop is not None:
                # (B, K, cur + 1) -> (B * K, cur + 1) -> one flag each -> (B, K)
                hits |= run.stop(top_running[:, :, : cur + 1].reshape(B * keep_k, cur + 1)).view(B, keep_k)
            if cur + 1 >= max_length:
                hits = torch.ones_like(hits)

            # The best candidates that did not stop carry on.
            cont_lp = top_lp + hits.float() * -1.0e9
            nxt = torch.topk(cont_lp, k=nb)[1]
            running = _gather(top_running, nxt)  # (B, K, T) -> (B, nb, T)
            running_scores = _gather(cont_lp, nxt)
            running_idx = _gather(top_running_idx, nxt)

            # Candidates among the top nb that stopped join the finished hypotheses if they are better.
            just_done = hits & top_nb_mask[None, :]
            done_lp = top_lp / ((cur + 1 - L) ** s.length_penalty)
            full = torch.all(finished, dim=-1, keepdim=True) & (s.early_stopping is True)
            done_lp = done_lp + full.float() * -1.0e9
            done_lp = done_lp + (~improvable).float() * -1.0e9
            done_lp = done_lp + (~just_done) * -1.0e9
            merged_scores = torch.cat((beam_scores, done_lp), dim=1)  # (B, nb + K), back to (B, nb) below
            best = torch.topk(merged_scores, k=nb)[1]
            sequences = _gather(torch.cat((sequences, top_running), dim=1), best)
            beam_scores = _gather(merged_scores, best)
            beam_idx = _gather(torch.cat((beam_idx, top_running_idx), dim=1), best)
            finished = _gather(torch.cat((finished, just_done), dim=1), best)

            # The cache follows each running beam to its parent.
            cache.reorder(running_idx[..., cur - L].reshape(-1).long())  # (B, nb) -> (B * nb,) parent rows
            cur += 1

            # Can a running beam still beat the worst finished one?
            if s.early_stopping == "never" and s.length_penalty > 0.0:
                best_len = max_length - L
            else:
                best_len = cur - L
            best_running = running_scores[:, :1] / (best_len**s.length_penalty)
            worst_done = torch.where(finished, torch.min(beam_scores, dim=1, keepdim=True)[0], -1.0e9)
            improvable = improvable & torch.any(best_running > worst_done, dim=-1, keepdim=True)
            open_beams = not (bool(torch.all(finished)) and s.early_stopping is True)
            if not (bool(torch.any(improvable)) and open_beams and not bool(torch.all(hits))):
                break
            tokens = running[:, :, cur - 1].reshape(B * nb, 1)  # (B, nb) -> (B * nb, 1)
            logits = threads.run(lambda: next_scores(model, tokens, full_mask[:, :cur], next_pos, cache))
            next_pos = next_pos + 1
    finally:
        threads.restore()

    k = s.num_return_sequences
    sequences = sequences[:, :k].reshape(B * k, max_length)  # (B, nb, T) -> (B * k, T)
    beam_idx = beam_idx[:, :k].reshape(B * k, -1)
    generated = int((beam_idx + 1).bool().sum(dim=1).max())
    return sequences[:, : L + generated]


def _top_candidates(log_probs: torch.Tensor, beams: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(log_probs, k)`` over (batch, beams x vocab), found beam by beam: the best k of
    every beam first (one row each, which the threads share), then the best k of those. The same
    candidates, several times faster than one partial sort of the whole flat row."""
    batch, width = log_probs.shape
    vocab = width // beams
    if vocab <= k:
        return torch.topk(log_probs, k=k)
    lp, idx = torch.topk(log_probs.view(batch * beams, vocab), k=k)
    idx = idx + _beam_offsets(batch, beams, vocab, idx.device)
    best, pick = torch.topk(lp.view(batch, beams * k), k=k)
    return best, torch.gather(idx.view(batch, beams * k), 1, pick)


@functools.lru_cache(maxsize=8)
def _beam_offsets(batch: int, beams: int, vocab: int, device: torch.device) -> torch.Tensor:
    """Where each beam's block starts in the flat (beams x vocab) row, one row per beam; made
    once per shape, not once per step."""
    return (torch.arange(beams, device=device) * vocab).repeat(batch)[:, None]


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t`` (B, n, ...) picked along its second axis by ``index`` (B, m): (B, m, ...)."""
    while index.ndim < t.ndim:
        index = index.unsqueeze(-1)
    return torch.take_along_dim(t, index, dim=1)

