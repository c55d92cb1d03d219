"""Continuous batching: every generation request the server takes shares one decode batch.

One thread runs the decode loop. Between two steps, requests waiting in the queue join: their
prompts are prefilled together (left-padded), and their rows are added to the batch's key/value
cache, right-aligned with the rows already there (the cache's columns are the batch's common
timeline; a row's earlier columns are masked out, and each row keeps its own positions). Each
step then picks one token per row with the request's own settings — the generation package's
logits processors and sampler (``generation.processors``, ``generation.sampling.choose``), plus
OpenAI's presence and frequency penalties — and runs one forward pass over the rows still going.
A row leaves when it ends (end-of-sequence token, stop string, ``max_tokens``), when its client
has gone (``cancel``: it is dropped before the next step) or when its request outlives the
timeout; the cache is then rebuilt without it, its leading columns that no row uses cut off.

Prompts are prefilled whole (no chunking): a long prompt delays the others' next token by its
prefill.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .. import runtime
from ..errors import LmatlasError
from ..generation.processors import Processors, occurrence_penalty
from ..generation.run import next_scores, positions
from ..generation.sampling import choose
from ..generation.settings import GenerationSettings, check, eos_list
from .errors import ApiError

log = logging.getLogger("lmatlas.serve")

# Columns the cache gains at a time when a row outgrows it (each growth copies the cache once).
GROWTH = 64
# Below this temperature, decoding is greedy (as vLLM).
MIN_TEMPERATURE = 1e-5
# Steps whose batch size ``Engine.sizes`` remembers (the tests and /metrics read it).
HISTORY = 10_000


@dataclass
class Sampling:
    """One request's settings, in OpenAI's terms."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # None: no log-probabilities; k: the chosen token's and k others'


# What a request hears from the loop (through its ``emit``), in this order per choice:
@dataclass
class Token:
    choice: int
    text: str  # the new text, '' while a character or a possible stop string is incomplete
    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


@dataclass
class Finish:
    choice: int
    reason: str  # "stop" or "length"
    text: str  # the whole text of the choice


@dataclass
class End:
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failure:
    error: ApiError


class Request:
    def __init__(self, prompt: list[int], settings: GenerationSettings, sampling: Sampling,
                 emit: Callable[[object], None], timeout: float):
        self.prompt = prompt
        self.s = settings
        self.sampling = sampling
        self.emit = emit
        self.created = time.monotonic()
        self.deadline = self.created + timeout
        self.cancelled = False
        self.processors = Processors(settings, len(prompt), 1)
        self.eos = set(eos_list(settings.eos_token_id))
        self.generator = None
        if sampling.seed is not None:
            self.generator = torch.Generator().manual_seed(int(sampling.seed))
        self.open_rows = sampling.n
        self.completion_tokens = 0
        self.first_token_at: float | None = None
        self.dropped_at_step: int | None = None  # when a cancelled request left the batch


class Row:
    """One choice of a request: the tokens picked so far and the text sent."""

    def __init__(self, request: Request, choice: int):
        self.request, self.choice = request, choice
        self.tokens: list[int] = []
        self.sent = ""
        self.finished = False


class Batch:
    """The rows decoding together: their cache (``length`` columns filled), mask over those
    columns, next positions (rows, 1) and the scores of their next token (rows, vocab)."""

    def __init__(self, cache, mask: torch.Tensor, pos: torch.Tensor, scores: torch.Tensor, rows: list[Row]):
        self.cache, self.mask, self.pos, self.scores, self.rows = cache, mask, pos, scores, rows


class Engine:
    """The decode loop over ``model`` (a decoder with its language-model head)."""

    def __init__(self, model, tokenizer, max_rows: int = 16, max_queue: int = 64, timeout: float = 600.0,
                 metrics=None):
        if getattr(model, "is_encoder_decoder", False) or not getattr(model, "is_decoder", False):
            raise LmatlasError("the server's chat model must be a decoder with a language-model head")
        if model.config.memory_length is not None:
            raise LmatlasError("the server batches decodes over a key/value cache, and Transformer-XL keeps a memory "
                               "instead: use lmatlas generate or the text-generation pipeline")
        self.model, self.tokenizer = model, tokenizer
        self.max_rows, self.max_queue, self.timeout = max_rows, max_queue, timeout
        self.metrics = metrics
        self.cfg = model.config
        # The context the model was trained for (a rotary model could address more, but not well).
        self.context = self.cfg.max_positions - self.cfg.position_offset
        self.waiting: collections.deque[Request] = collections.deque()
        self.condition = threading.Condition()
        self.batch: Batch | None = None
        self.steps = 0
        self.sizes: collections.deque[int] = collections.deque(maxlen=HISTORY)
        # (step, rows left) each time cancelled rows left: the step numbered ``step`` is the next.
        self.drops: collections.deque[tuple[int, int]] = collections.deque(maxlen=HISTORY)
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="lmatlas-serve-decode", daemon=True)
        runtime.install(model)

    # -- the request side (any thread) -----------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the running and waiting requests, then end the loop."""
        with self.condition:
            self.stopping = True
            self.condition.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def settings(self, prompt_length: int, sampling: Sampling) -> GenerationSettings:
        """The generate() settings of a request; a 400 for what cannot work."""
        room = self.context - prompt_length
        if room < 1:
            raise ApiError(400, f"the prompt is {prompt_length} tokens long, but the model reads at most "
                                f"{self.context - 1} to leave room for a reply", param="messages",
                           code="context_length_exceeded")
        if sampling.max_tokens > room:
            raise ApiError(400, f"max_tokens {sampling.max_tokens} goes beyond the model's context of {self.context} "
                                f"tokens (the prompt takes {prompt_length}); ask for at most {room}",
                           param="max_tokens", code="context_length_exceeded")
        # A temperature near 0 is greedy decoding (dividing by it would overflow the scores).
        sample = sampling.temperature >= MIN_TEMPERATURE
        call = {"max_new_tokens": sampling.max_tokens, "do_sample": sample, "top_k": None,
                "temperature": sampling.temperature if sample else None, "top_p": sampling.top_p if sample else None}
        try:
            s = GenerationSettings.resolve(self.model, call)
            s.max_length = prompt_length + sampling.max_tokens
            check(s, prompt_length, self.cfg.usable_positions, self.cfg.vocab_size)
        except LmatlasError as e:
            raise ApiError(400, str(e)) from None
        return s

    def submit(self, prompt: list[int], sampling: Sampling, emit: Callable[[object], None]) -> Request:
        """Queue a request; ``emit`` hears its events from the loop's thread. A 429 when the
        queue is full, a 503 once the server is stopping."""
        if not prompt:
            raise ApiError(400, "the prompt is empty", param="prompt")
        if sampling.n > self.max_rows:
            raise ApiError(400, f"n is {sampling.n}, but the server decodes at most {self.max_rows} rows at once",
                           param="n")
        request = Request(prompt, self.settings(len(prompt), sampling), sampling, emit, self.timeout)
        with self.condition:
            if self.stopping:
                raise ApiError(503, "the server is shutting down", type="server_error")
            if len(self.waiting) >= self.max_queue:
                raise ApiError(429, f"the server's queue is full ({self.max_queue} requests waiting); retry shortly",
                               type="rate_limit_error", headers={"Retry-After": "1"})
            self.waiting.append(request)
            self._gauge_queue()
            self.condition.notify_all()
        return request

    def cancel(self, request: Request) -> None:
        """The client has gone: its rows leave the batch before the next step."""
        with self.condition:
            request.cancelled = True
            if request in self.waiting:
                self.waiting.remove(request)
                self._gauge_queue()
            self.condition.notify_all()

    def _gauge_queue(self) -> None:
        if self.metrics is not None:
            self.metrics.queue.set(len(self.waiting))

    # -- the loop (its own thread) -----------------------------------------------------------

    def _loop(self) -> None:
        threads = runtime.StepThreads()
        try:
            while True:
                with self.condition:
                    while not self.waiting and self.batch is None and not self.stopping:
                        self.condition.wait()
                    if self.stopping and not self.waiting and self.batch is None:
                        return
                    joining = self._admit()
                try:
                    self._step(joining, threads)
                except Exception as e:  # a bug: its requests fail, the server goes on
                    log.exception("the decode loop failed")
                    failed = {id(r.request): r.request for r in (self.batch.rows if self.batch else [])}
                    failed.update({id(r): r for r in joining})
                    for request in failed.values():
                        _send(request, Failure(ApiError(500, f"generation failed: {e}", type="server_error")))
                    self.batch = None
        finally:
            threads.restore()

    def _admit(self) -> list[Request]:
        """The waiting requests that fit in the batch now, oldest first (under the lock)."""
        used = len(self.batch.rows) if self.batch else 0
        joining = []
        while self.waiting and used + self.waiting[0].sampling.n <= self.max_rows:
            request = self.waiting.popleft()
            used += request.sampling.n
            joining.append(request)
        self._gauge_queue()
        return joining

    def _step(self, joining: list[Request], threads: runtime.StepThreads) -> None:
        now = time.monotonic()
        if self.batch is not None:
            gone = [i for i, r in enumerate(self.batch.rows) if r.request.cancelled or now > r.request.deadline]
            for i in gone:
                request = self.batch.rows[i].request
                if not request.cancelled and request.dropped_at_step is None:
                    _send(request, Failure(ApiError(
                        504, f"the request took longer than the server's timeout of {self.timeout:g} s",
                        type="server_error", code="timeout")))
                if request.dropped_at_step is None:
                    request.dropped_at_step = self.steps
            self._drop(gone)
            if gone:
                self.drops.append((self.steps, len(self.batch.rows) if self.batch else 0))
        live = [r for r in joining if not r.cancelled]
        if live:
            self._join(self._prefill(live))
        if self.batch is None:
            return
        tokens = self._pick()
        going = [i for i, r in enumerate(self.batch.rows) if not r.finished]
        self._drop([i for i, r in enumerate(self.batch.rows) if r.finished])
        if self.batch is not None:
            self._forward(tokens[going], threads)

    def _prefill(self, requests: list[Request]) -> Batch:
        rows = [Row(r, c) for r in requests for c in range(r.sampling.n)]
        prompts = [row.request.prompt for row in rows]
        width = max(len(p) for p in prompts)
        pad = self._pad_id()
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        cache = self.model.new_cache(len(rows), width)
        pos = positions(mask)
        with runtime.decoding(self.model, len(rows)):
            scores = next_scores(self.model, ids, mask, pos, cache)
        return Batch(cache, mask, pos[:, -1:] + 1, scores, rows)

    def _pad_id(self) -> int:
        eos = eos_list(self.cfg.eos_token_id)
        pad = self.cfg.pad_token_id
        return int(pad if pad is not None else (eos[0] if eos else 0))

    def _join(self, group: Batch) -> None:
        self.batch = group if self.batch is None else self._combine([self.batch, group])
        if self.batch.cache.length >= self.batch.cache.max_length:
            self.batch = self._combine([self.batch])

    def _drop(self, indices: list[int]) -> None:
        if not indices or self.batch is None:
            return
        b = self.batch
        leaving = set(indices)
        keep = [i for i in range(len(b.rows)) if i not in leaving]
        if not keep:
            self.batch = None
            return
        n = b.cache.length
        index = torch.tensor(keep)
        part = Batch(_Columns(b.cache.data[:, :, index, :, :n], n), b.mask[index, :n], b.pos[index],
                     b.scores[index], [b.rows[i] for i in keep])
        self.batch = self._combine([part])

    def _combine(self, parts: list[Batch]) -> Batch:
        """One batch of ``parts``' rows, right-aligned on a common timeline, with room to grow;
        columns no row attends to are left out."""
        trimmed = []
        for p in parts:
            n = p.cache.length
            used = p.mask[:, :n].any(dim=0).nonzero()
            first = int(used[0]) if len(used) else n
            trimmed.append((p, first, n - first))
        length = max(m for _, _, m in trimmed)
        rows = [r for p in parts for r in p.rows]
        left = max(r.request.sampling.max_tokens - len(r.tokens) for r in rows)
        width = min(length + max(1, min(GROWTH, left)) + 1, length + left + 1)
        cache = self.model.new_cache(len(rows), width)
        cache.length = length
        # Zeros, not whatever the memory held: a masked column still meets a weight of 0 in the
        # attention's sum, and 0 * NaN would be NaN.
        cache.data.zero_()
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        at = 0
        for p, first, m in trimmed:
            b = len(p.rows)
            cache.data[:, :, at:at + b, :, length - m:length] = p.cache.data[:, :, :, :, first:first + m]
            mask[at:at + b, length - m:length] = p.mask[:, first:first + m]
            at += b
        return Batch(cache, mask, torch.cat([p.pos for p in parts]), torch.cat([p.scores for p in parts]), rows)

    def _forward(self, tokens: torch.Tensor, threads: runtime.StepThreads) -> None:
        b = self.batch
        if b.cache.length + 1 > b.cache.max_length:
            self.batch = b = self._combine([b])
        n = b.cache.length
        b.mask[:, n] = 1
        step = tokens[:, None]
        rows = len(b.rows)
        with runtime.decoding(self.model, rows):
            b.scores = threads.run(lambda: next_scores(self.model, step, b.mask[:, : n + 1], b.pos, b.cache))
        b.pos = b.pos + 1
        self.steps += 1
        self.sizes.append(rows)
        if self.metrics is not None:
            self.metrics.batch.set(rows)

    def _pick(self) -> torch.Tensor:
        """Each row's next token, with its request's settings; the events it makes are sent."""
        b = self.batch
        tokens = torch.empty(len(b.rows), dtype=torch.long)
        start = 0
        while start < len(b.rows):
            request = b.rows[start].request
            end = start
            while end < len(b.rows) and b.rows[end].request is request:
                end += 1
            tokens[start:end] = self._pick_request(request, b.rows[start:end], b.scores[start:end])
            start = end
        return tokens

    def _pick_request(self, request: Request, rows: list[Row], scores: torch.Tensor) -> torch.Tensor:
        sampling = request.sampling
        logprobs = torch.log_softmax(scores, dim=-1) if sampling.logprobs is not None else None
        generated = torch.tensor([r.tokens for r in rows], dtype=torch.long).reshape(len(rows), -1)
        if sampling.presence_penalty or sampling.frequency_penalty:
            scores = occurrence_penalty(generated, scores, sampling.presence_penalty, sampling.frequency_penalty)
        prompt = torch.tensor(request.prompt, dtype=torch.long)[None].expand(len(rows), -1)
        scores = request.processors(torch.cat([prompt, generated], dim=1), scores.clone())
        tokens = choose(scores, request.s.do_sample, request.generator)
        if request.first_token_at is None:
            request.first_token_at = time.monotonic()
            if self.metrics is not None:
                self.metrics.first_token.observe(request.first_token_at - request.created)
        for i, (row, token) in enumerate(zip(rows, tokens.tolist())):
            lp = top = None
            if logprobs is not None:
                lp = float(logprobs[i, token])
                if sampling.logprobs:
                    values, ids = torch.topk(logprobs[i], sampling.logprobs)
                    top = list(zip(ids.tolist(), values.tolist()))
            self._advance(row, token, lp, top)
        if self.metrics is not None:
            self.metrics.tokens.inc(len(rows))
        return tokens

    def _advance(self, row: Row, token: int, logprob, top) -> None:
        request, sampling = row.request, row.request.sampling
        row.tokens.append(token)
        request.completion_tokens += 1
        reason = "stop" if token in request.eos else None
        text = self.tokenizer.decode([t for t in row.tokens if t not in request.eos], skip_special_tokens=True)
        for stop in sampling.stop:
            at = text.find(stop)
            if at >= 0:
                text, reason = text[:at], "stop"
        if reason is None and len(row.tokens) >= sampling.max_tokens:
            reason = "length"
        if reason is not None:
            shown = text
        elif text.endswith("\ufffd"):
            shown = row.sent  # half a character so far
        else:
            # Hold back what could be the start of a stop string.
            hold = max((len(s) - 1 for s in sampling.stop), default=0)
            shown = text[: len(text) - hold] if hold else text
        delta = shown[len(row.sent):] if shown.startswith(row.sent) and len(shown) > len(row.sent) else ""
        row.sent += delta
        _send(request, Token(row.choice, delta, token, logprob, top))
        if reason is not None:
            row.finished = True
            request.open_rows -= 1
            _send(request, Finish(row.choice, reason, text))
            if request.open_rows == 0:
                _send(request, End(len(request.prompt), request.completion_tokens))


class _Columns:
    """A cache-like view of some rows' filled columns (what ``Engine._combine`` reads)."""

    def __init__(self, data: torch.Tensor, length: int):
        self.data, self.length = data, length


def _send(request: Request, event) -> None:
    try:
        request.emit(event)
    except Exception:  # the listener is gone (its event loop closed): nothing to tell
        pass


__all__ = ["End", "Engine", "Failure", "Finish", "Request", "Sampling", "Token"]
