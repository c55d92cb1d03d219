"""Decoding: greedy, sampling and beam search over any model with a key/value cache.

One engine for every decoder and encoder-decoder: the model only runs forward passes over new
tokens with a cache; everything else — settings, logits processors, stopping, beam bookkeeping,
batching with left padding, streaming — is here. An encoder-decoder's source is encoded once;
its cache (``encoder_decoder.Seq2SeqCache``) holds the cross-attention keys and values once per
source, shared by that source's beams, and the loop below runs on the decoder's tokens exactly
as it does for a decoder's prompt (which for an encoder-decoder is the decoder start token).
Argument names and semantics follow transformers' ``generate()`` (4.57), so that the same call
gives the same tokens:

- processors run in transformers' order: repetition penalty, no-repeat n-grams, bad words,
  minimum length, minimum new tokens, forced BOS (mBART's target language), forced EOS, then
  (sampling only) temperature, top-k, top-p;
- a finished row (EOS or stop string) continues with ``pad_token_id``; generation ends when every
  row has finished or the length limit is reached;
- beam search keeps transformers' vectorised algorithm: 2 x beams candidates per step (more with
  several EOS tokens), finished hypotheses scored by sum of log-probabilities / (new length **
  length_penalty), ``early_stopping`` True / False / "never" as documented there;
- left-padded prompts take their positions from the attention mask (cumsum - 1).

The cache is allocated once per call for prompt + new tokens; beam search reorders it in place.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from . import runtime
from .errors import LmatlasError

NEG_INF = -math.inf


@dataclass
class GenerationSettings:
    """The arguments of ``generate()``, after defaults (transformers' GenerationConfig ones,
    then the model's config and generation_config.json, then the call's own)."""

    max_length: int = 20
    max_new_tokens: int | None = None
    min_length: int = 0
    min_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    stop_strings: str | list[str] | None = None
    use_cache: bool = True
    # Encoder-decoders: the token the decoder starts from, and tokens forced first (mBART's
    # target language) and last (at max_length).
    decoder_start_token_id: int | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | list[int] | None = None
    # Token sequences never to complete (Marian's checkpoints forbid their pad token).
    bad_words_ids: list[list[int]] | None = None

    @classmethod
    def resolve(cls, model, kwargs: dict[str, Any]) -> "GenerationSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise LmatlasError(f"generate() got unknown argument(s) {', '.join(unknown)}")
        cfg = model.config
        values: dict[str, Any] = {
            "eos_token_id": cfg.eos_token_id,
            "pad_token_id": cfg.pad_token_id,
            "bos_token_id": cfg.bos_token_id,
        }
        # Without a generation_config.json, transformers takes the generation settings that
        # config.json holds (decoder_start_token_id, forced_eos_token_id, num_beams, ...).
        defaults = cfg.generation or (cfg.hf_config or {})
        values.update({k: v for k, v in defaults.items() if k in known and v is not None})
        # As in transformers, an explicit None switches these off (e.g. forced_eos_token_id=None);
        # for the other settings None means "the default".
        values.update({k: v for k, v in kwargs.items() if v is not None or k in _NONE_SWITCHES_OFF})
        return cls(**values)


_NONE_SWITCHES_OFF = frozenset({
    "eos_token_id", "forced_bos_token_id", "forced_eos_token_id", "bad_words_ids", "max_new_tokens",
    "min_new_tokens", "stop_strings", "top_k",
})  # fmt: skip


def _eos_list(eos: int | Sequence[int] | None) -> list[int]:
    if eos is None:
        return []
    if isinstance(eos, int):
        return [eos]
    return [int(e) for e in eos]


def _check(s: GenerationSettings, prompt_length: int, usable_positions: int | None, vocab_size: int) -> None:
    """One clear sentence for each argument that cannot work (transformers mostly warns)."""
    if s.max_new_tokens is not None and s.max_new_tokens < 0:
        raise LmatlasError(f"max_new_tokens must be >= 0, not {s.max_new_tokens}")
    if s.do_sample:
        if not isinstance(s.temperature, (int, float)) or s.temperature <= 0:
            raise LmatlasError(f"temperature must be > 0 when sampling, not {s.temperature}")
        if not 0 < s.top_p <= 1:
            raise LmatlasError(f"top_p must be in (0, 1], not {s.top_p}")
        if s.top_k is not None and (not isinstance(s.top_k, int) or s.top_k < 0):
            raise LmatlasError(f"top_k must be a whole number >= 0, not {s.top_k}")
    if s.repetition_penalty <= 0:
        raise LmatlasError(f"repetition_penalty must be > 0, not {s.repetition_penalty}")
    if not isinstance(s.num_beams, int) or s.num_beams < 1:
        raise LmatlasError(f"num_beams must be a whole number >= 1, not {s.num_beams}")
    if s.num_return_sequences < 1:
        raise LmatlasError(f"num_return_sequences must be >= 1, not {s.num_return_sequences}")
    if s.num_beams == 1 and not s.do_sample and s.num_return_sequences != 1:
        raise LmatlasError(
            f"num_return_sequences={s.num_return_sequences} needs sampling (do_sample=True) or beam search "
            "(num_beams >= num_return_sequences); greedy decoding gives one sequence per prompt"
        )
    if s.num_beams > 1 and s.num_return_sequences > s.num_beams:
        raise LmatlasError(
            f"num_return_sequences ({s.num_return_sequences}) cannot exceed num_beams ({s.num_beams})"
        )
    if s.early_stopping not in (True, False, "never"):
        raise LmatlasError(f"early_stopping must be True, False or 'never', not {s.early_stopping!r}")
    for e in _eos_list(s.eos_token_id):
        if not 0 <= e < vocab_size:
            raise LmatlasError(f"eos_token_id {e} is outside the vocabulary (0..{vocab_size - 1})")
    for name in ("forced_bos_token_id", "forced_eos_token_id", "decoder_start_token_id"):
        for e in _eos_list(getattr(s, name)):
            if not 0 <= e < vocab_size:
                raise LmatlasError(f"{name} {e} is outside the vocabulary (0..{vocab_size - 1})")
    if s.bad_words_ids is not None:
        bad = s.bad_words_ids
        if (
            not isinstance(bad, (list, tuple))
            or not bad
            or any(not isinstance(w, (list, tuple)) or not w for w in bad)
            or any(not isinstance(t, int) or not 0 <= t < vocab_size for w in bad for t in w)
        ):
            raise LmatlasError(
                f"bad_words_ids must be a non-empty list of non-empty lists of token ids (0..{vocab_size - 1}), "
                f"not {bad!r}"
            )
    if usable_positions is not None:
        if prompt_length > usable_positions:
            raise LmatlasError(
                f"the prompt is {prompt_length} tokens long, but the model has only {usable_positions} positions"
            )
        if s.max_length > usable_positions:
            new = s.max_length - prompt_length
            raise LmatlasError(
                f"max_new_tokens {new} goes beyond the model's {usable_positions} positions "
                f"(the prompt takes {prompt_length}); ask for at most {usable_positions - prompt_length}"
            )


# ---------------------------------------------------------------------------------------------
# Logits processors, in transformers' order. Each takes the sequences so far (rows, length) and
# the float32 scores (rows, vocab) and returns new scores.
# ---------------------------------------------------------------------------------------------


def repetition_penalty(ids: torch.Tensor, scores: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty on tokens already present (prompt included): divide positive scores, multiply
    negative ones."""
    seen = torch.gather(scores, 1, ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, ids, seen)


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
        self.eos = _eos_list(s.eos_token_id)
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
            scores = force(scores, _eos_list(s.forced_eos_token_id))
        if s.do_sample:
            if s.temperature != 1.0:
                scores = scores / s.temperature
            if s.top_k:
                scores = top_k_filter(scores, s.top_k, self.keep)
            if s.top_p < 1.0:
                scores = top_p_filter(scores, s.top_p, self.keep)
        return scores


# ---------------------------------------------------------------------------------------------
# Stopping
# ---------------------------------------------------------------------------------------------


class StopStrings:
    """A row stops when a stop string appears in its text and overlaps its last token (so a stop
    string already in the prompt does not stop it), as transformers' StopStringCriteria."""

    def __init__(self, strings: str | list[str], tokenizer):
        if tokenizer is None:
            raise LmatlasError("stop_strings needs the tokenizer: pass tokenizer= to generate()")
        self.strings = [strings] if isinstance(strings, str) else list(strings)
        if not self.strings or any(not isinstance(x, str) or not x for x in self.strings):
            raise LmatlasError("stop_strings must be one or more non-empty strings")
        self.tokenizer = tokenizer
        # Enough tokens to hold the longest stop string, with a margin for tokens shorter than
        # one character (byte-level pieces of one character).
        self.window = max(len(x) for x in self.strings) + 4

    def __call__(self, ids: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        done = torch.zeros(ids.shape[0], dtype=torch.bool)
        tails = ids[:, -self.window :].tolist()
        for r, tail in enumerate(tails):
            if rows is not None and not rows[r]:
                continue
            before = self.tokenizer.decode(tail[:-1], skip_special_tokens=False)
            text = self.tokenizer.decode(tail, skip_special_tokens=False)
            for stop in self.strings:
                at = text.rfind(stop)
                if at >= 0 and at + len(stop) > len(before) - _common_suffix_slack(before, text):
                    done[r] = True
                    break
        return done.to(ids.device)


def _common_suffix_slack(before: str, text: str) -> int:
    # Decoding the shorter list can differ from the prefix of the longer one (a partial UTF-8
    # character, a cleaned-up space): count only the part of `before` that `text` shares.
    n = 0
    for a, b in zip(before, text):
        if a != b:
            break
        n += 1
    return len(before) - n


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


def _positions(mask: torch.Tensor) -> torch.Tensor:
    # transformers: cumsum of the mask - 1, with padding given position 1 (never attended).
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def _next_scores(model, ids, mask, pos, cache) -> torch.Tensor:
    # inference_mode here, not around the loop: stream() yields between steps to the caller.
    with torch.inference_mode():
        if getattr(model, "is_encoder_decoder", False):
            # The source comes from the cache; ids are the decoder's tokens.
            out = model(
                decoder_input_ids=ids, decoder_attention_mask=mask, decoder_position_ids=pos, cache=cache,
                logits_to_keep=1,
            )
        else:
            out = model(ids, attention_mask=mask, position_ids=pos, cache=cache, logits_to_keep=1)
    return out["logits"][:, -1, :].float()


class _Run:
    """What one call works with: prompt, mask, settings, cache.

    For an encoder-decoder, ``input_ids`` / ``attention_mask`` are the source, encoded here once;
    the "prompt" the loop continues is the decoder's (``decoder_input_ids``, by default the
    decoder start token), as in transformers.
    """

    def __init__(self, model, input_ids, attention_mask, kwargs):
        self.encoder_decoder = getattr(model, "is_encoder_decoder", False)
        usable = getattr(model, "is_decoder", False) or self.encoder_decoder
        # A decoder's classifier scores labels, not next tokens.
        language_model = getattr(model, "head_name", "causal-lm") in ("causal-lm", "seq2seq-lm")
        if not usable or not language_model or getattr(model, "head", None) is None:
            raise LmatlasError(
                "generate() needs a decoder loaded with the causal-lm head, or an encoder-decoder with the "
                "seq2seq-lm head"
            )
        # The CPU runtime's kernels for this decode (they stay with the model: ``runtime.install``).
        runtime.install(model)
        self.tokenizer = kwargs.pop("tokenizer", None)
        self.streamer = kwargs.pop("streamer", None)
        seed = kwargs.pop("seed", None)
        self.generator = kwargs.pop("generator", None)
        if self.generator is None and seed is not None:
            self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        decoder_input_ids = kwargs.pop("decoder_input_ids", None) if self.encoder_decoder else None
        _check_ids(input_ids, "input_ids")
        if input_ids.shape[1] == 0:
            raise LmatlasError("input_ids is empty: give at least one prompt token (e.g. the BOS token)")
        s = GenerationSettings.resolve(model, kwargs)
        # The rows decoded at once: the runtime's hint (see ``runtime.decoding``).
        self.rows = input_ids.shape[0] * (s.num_beams if s.num_beams > 1 else (
            s.num_return_sequences if s.do_sample else 1))
        cfg = model.config
        eos = _eos_list(s.eos_token_id)
        if s.pad_token_id is None and eos:
            s.pad_token_id = eos[0]  # as transformers, with its warning left out
        vocab = cfg.vocab_size
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab:
            raise LmatlasError(f"input_ids holds a token id outside the vocabulary (0..{vocab - 1})")
        if attention_mask is None:
            # transformers infers the mask from padding when it can tell padding from EOS.
            pad = s.pad_token_id
            if pad is not None and bool((input_ids == pad).any()) and pad not in eos:
                attention_mask = input_ids.ne(pad).long()
            else:
                attention_mask = torch.ones_like(input_ids)
        elif not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask)
            raise LmatlasError(f"attention_mask has shape {shape}, input_ids {tuple(input_ids.shape)}")
        self.encoded = None
        self.source_mask = None
        if self.encoder_decoder:
            positions = cfg.usable_positions
            if positions is not None and input_ids.shape[1] > positions:
                raise LmatlasError(
                    f"the source is {input_ids.shape[1]} tokens long, but the encoder has only {positions} positions"
                )
            self.source_mask = attention_mask.long()
            # The encoder's linear layers serve only the source, many rows at once: oneDNN's packed
            # weights (the hint for the most rows it packs for), not the decoding steps' kernel.
            with torch.inference_mode(), runtime.decoding(model, runtime.MAX_PACKED_ROWS):
                self.encoded = model.encode(input_ids.long(), self.source_mask)["last_hidden_state"]
            input_ids = self._decoder_prompt(s, decoder_input_ids, input_ids.shape[0], cfg.target_vocab_size)
            attention_mask = torch.ones_like(input_ids)
            vocab = cfg.target_vocab_size
        L = input_ids.shape[1]
        if s.max_new_tokens is not None:
            s.max_length = L + s.max_new_tokens
        _check(s, L, cfg.usable_positions, vocab)
        self.model = model
        self.s = s
        self.eos = torch.tensor(eos, dtype=torch.long) if eos else None
        self.input_ids = input_ids.long()
        self.mask = attention_mask.long()
        self.stop = StopStrings(s.stop_strings, self.tokenizer) if s.stop_strings else None
        self.prompt_length = L

    @staticmethod
    def _decoder_prompt(s: GenerationSettings, decoder_input_ids, batch: int, vocab: int) -> torch.Tensor:
        """The decoder's first tokens: the start token, before any ``decoder_input_ids`` given
        (unless they already begin with it), as transformers does."""
        start = s.decoder_start_token_id if s.decoder_start_token_id is not None else s.bos_token_id
        if start is None:
            raise LmatlasError(
                "the model's config has no decoder_start_token_id (nor bos_token_id): pass decoder_start_token_id="
            )
        if isinstance(start, (list, tuple)):
            start = start[0]
        first = torch.full((batch, 1), int(start), dtype=torch.long)
        if decoder_input_ids is None:
            return first
        _check_ids(decoder_input_ids, "decoder_input_ids")
        if decoder_input_ids.shape[0] != batch:
            raise LmatlasError(
                f"decoder_input_ids has {decoder_input_ids.shape[0]} rows, but there are {batch} sources"
            )
        if decoder_input_ids.numel() and (int(decoder_input_ids.min()) < 0 or int(decoder_input_ids.max()) >= vocab):
            raise LmatlasError(f"decoder_input_ids holds a token id outside the vocabulary (0..{vocab - 1})")
        decoder_input_ids = decoder_input_ids.long()
        if decoder_input_ids.shape[1] == 0 or bool((decoder_input_ids[:, 0] != start).all()):
            decoder_input_ids = torch.cat([first, decoder_input_ids], dim=1)
        return decoder_input_ids

    def new_cache(self, rows: int, max_length: int, use_cache: bool = True):
        """The cache for ``rows`` sequences: the model's key/value cache (None without one), or
        an encoder-decoder's ``Seq2SeqCache`` over the encoded sources (always: it carries the
        source, with or without the decoder's own keys and values)."""
        if self.encoded is None:
            return self.model.new_cache(rows, max_length) if use_cache else None
        # The cross-attention key/value projections, like the encoder, serve only the source.
        with runtime.decoding(self.model, runtime.MAX_PACKED_ROWS):
            return self.model.new_cache(
                rows, max_length, encoder_last_hidden_state=self.encoded, attention_mask=self.source_mask,
                use_cache=use_cache,
            )

    def expand(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids.repeat_interleave(n, dim=0), self.mask.repeat_interleave(n, dim=0)

    def hits_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.eos is None:
            return torch.zeros_like(tokens, dtype=torch.bool)
        return torch.isin(tokens, self.eos.to(tokens.device))


def _check_ids(ids, name: str) -> None:
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise LmatlasError(f"{name} must be a 2-D tensor of token ids (batch, length)")


def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """Prompts + new tokens, (batch x num_return_sequences, length), as transformers returns.

    Arguments as transformers' ``generate()``: ``max_new_tokens`` (or ``max_length``),
    ``min_new_tokens``, ``min_length``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``,
    ``repetition_penalty``, ``no_repeat_ngram_size``, ``num_beams``, ``length_penalty``,
    ``early_stopping``, ``num_return_sequences``, ``eos_token_id`` (one or a list),
    ``pad_token_id``, ``stop_strings`` (with ``tokenizer=``), ``streamer`` (an object with
    ``put(ids)`` and ``end()``, as transformers' streamers). lmatlas adds ``seed``: sampling from
    its own generator, reproducible whatever else uses torch's global one.
    """
    with torch.inference_mode():
        run = _Run(model, input_ids, attention_mask, dict(kwargs))
        with runtime.decoding(model, run.rows):
            if run.s.num_beams > 1:
                return _beam_search(run)
            ids = None
            for ids in _sample_steps(run):
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
    run = _Run(model, ids, kwargs.pop("attention_mask", None), dict(kwargs))
    if run.s.num_beams > 1:
        raise LmatlasError("stream() decodes greedily or by sampling; beam search (num_beams > 1) cannot stream")
    shown = ""
    L = run.prompt_length
    for seq in _sample_steps(run):
        text = tokenizer.decode(seq[0, L:].tolist(), skip_special_tokens=True)
        if text.endswith("\ufffd"):
            continue  # half a character so far
        if text.startswith(shown):
            if len(text) > len(shown):
                yield text[len(shown) :]
        shown = text  # (a re-segmentation that changes earlier text is not shown again)


def _sample_steps(run: _Run) -> Iterator[torch.Tensor]:
    """Greedy and multinomial sampling, one token per row per step: yields the sequences after
    each step (the caller may stop early)."""
    s, model = run.s, run.model
    n = s.num_return_sequences if s.do_sample else 1
    ids, mask = run.expand(n)
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
    seqs = torch.full((rows, max_length), s.pad_token_id if s.pad_token_id is not None else 0, dtype=torch.long)
    seqs[:, :L] = ids
    full_mask = torch.ones((rows, max_length), dtype=torch.long)
    full_mask[:, :L] = mask
    pos = _positions(mask)
    next_pos = pos[:, -1:] + 1
    cache = run.new_cache(rows, max_length, s.use_cache)
    unfinished = torch.ones(rows, dtype=torch.bool)
    pad = torch.tensor(s.pad_token_id if s.pad_token_id is not None else 0)
    cur = L
    scores = _next_scores(model, ids, mask, pos, cache)
    threads = runtime.StepThreads()
    try:
        while True:
            scores = processors(seqs[:, :cur], scores)
            if s.do_sample:
                probs = F.softmax(scores, dim=-1)
                tokens = torch.multinomial(probs, num_samples=1, generator=run.generator).squeeze(1)
            else:
                tokens = torch.argmax(scores, dim=-1)
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
            if s.use_cache:
                step = tokens[:, None]
                scores = threads.run(lambda: _next_scores(model, step, full_mask[:, :cur], next_pos, cache))
            else:
                p = _positions(full_mask[:, :cur])
                scores = _next_scores(model, seqs[:, :cur], full_mask[:, :cur], p, cache)
            next_pos = next_pos + 1
    finally:
        threads.restore()
        if streamer is not None:
            streamer.end()


def _beam_search(run: _Run) -> torch.Tensor:
    """transformers' vectorised beam search (GenerationMixin._beam_search, 4.57), step for step."""
    s, model = run.s, run.model
    nb = s.num_beams
    B = run.input_ids.shape[0]
    ids, mask = run.expand(nb)
    L = ids.shape[1]
    max_length = s.max_length
    vocab = model.config.target_vocab_size
    n_eos = 0 if run.eos is None else run.eos.numel()
    keep_k = max(2, 1 + n_eos) * nb
    top_nb_mask = torch.cat([torch.ones(nb, dtype=torch.bool), torch.zeros(keep_k - nb, dtype=torch.bool)])
    processors = Processors(s, L, keep=1 + n_eos if n_eos else 2)
    if max_length <= L:
        return run.input_ids

    # transformers fills unused slots with pad, or with the first EOS when pad is 0 or unset.
    pad = s.pad_token_id
    fill = (pad if pad else int(run.eos[0])) if run.eos is not None else -1
    running = torch.full((B, nb, max_length), fill, dtype=torch.long)
    running[:, :, :L] = ids.view(B, nb, L)
    sequences = running.clone()
    running_scores = torch.zeros((B, nb))
    running_scores[:, 1:] = -1e9
    beam_scores = torch.full((B, nb), -1e9)
    finished = torch.zeros((B, nb), dtype=torch.bool)
    improvable = torch.ones((B, 1), dtype=torch.bool)
    hits = torch.zeros((B, nb), dtype=torch.bool)
    running_idx = torch.full((B, nb, max_length - L), -1, dtype=torch.int32)
    beam_idx = running_idx.clone()
    batch_offset = torch.arange(B).view(-1, 1) * nb

    full_mask = torch.ones((B * nb, max_length), dtype=torch.long)
    full_mask[:, :L] = mask
    pos = _positions(mask)
    next_pos = pos[:, -1:] + 1
    cache = run.new_cache(B * nb, max_length)
    logits = _next_scores(model, ids, mask, pos, cache)
    cur = L
    threads = runtime.StepThreads()
    try:
        while True:
            flat = running[:, :, :cur].reshape(B * nb, cur)
            log_probs = processors(flat, F.log_softmax(logits, dim=-1))
            log_probs = (log_probs.view(B, nb, vocab) + running_scores[:, :, None]).reshape(B, nb * vocab)

            # The best continuations of all beams (sampled without replacement with do_sample).
            if s.do_sample:
                top_idx = torch.multinomial(F.softmax(log_probs, dim=-1), num_samples=keep_k, generator=run.generator)
                top_lp = torch.gather(log_probs, 1, top_idx)
            else:
                top_lp, top_idx = _top_candidates(log_probs, nb, keep_k)
            parent = torch.div(top_idx, vocab, rounding_mode="floor")
            top_ids = top_idx % vocab
            top_running_idx = _gather(running_idx, parent)
            top_running = _gather(running, parent)
            top_running[:, :, cur] = top_ids
            top_running_idx[:, :, cur - L] = (parent + batch_offset).to(torch.int32)

            # Which candidates stop here: EOS, a stop string, or the length limit.
            hits = run.hits_eos(top_ids)
            if run.stop is not None:
                hits |= run.stop(top_running[:, :, : cur + 1].reshape(B * keep_k, cur + 1)).view(B, keep_k)
            if cur + 1 >= max_length:
                hits = torch.ones_like(hits)

            # The best candidates that did not stop carry on.
            cont_lp = top_lp + hits.float() * -1.0e9
            nxt = torch.topk(cont_lp, k=nb)[1]
            running = _gather(top_running, nxt)
            running_scores = _gather(cont_lp, nxt)
            running_idx = _gather(top_running_idx, nxt)

            # Candidates among the top nb that stopped join the finished hypotheses if they are better.
            just_done = hits & top_nb_mask[None, :]
            done_lp = top_lp / ((cur + 1 - L) ** s.length_penalty)
            full = torch.all(finished, dim=-1, keepdim=True) & (s.early_stopping is True)
            done_lp = done_lp + full.float() * -1.0e9
            done_lp = done_lp + (~improvable).float() * -1.0e9
            done_lp = done_lp + (~just_done) * -1.0e9
            merged_scores = torch.cat((beam_scores, done_lp), dim=1)
            best = torch.topk(merged_scores, k=nb)[1]
            sequences = _gather(torch.cat((sequences, top_running), dim=1), best)
            beam_scores = _gather(merged_scores, best)
            beam_idx = _gather(torch.cat((beam_idx, top_running_idx), dim=1), best)
            finished = _gather(torch.cat((finished, just_done), dim=1), best)

            # The cache follows each running beam to its parent.
            cache.reorder(running_idx[..., cur - L].reshape(-1).long())
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
            tokens = running[:, :, cur - 1].reshape(B * nb, 1)
            logits = threads.run(lambda: _next_scores(model, tokens, full_mask[:, :cur], next_pos, cache))
            next_pos = next_pos + 1
    finally:
        threads.restore()

    k = s.num_return_sequences
    sequences = sequences[:, :k].reshape(B * k, max_length)
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
    while index.ndim < t.ndim:
        index = index.unsqueeze(-1)
    return torch.take_along_dim(t, index, dim=1)


__all__ = ["GenerationSettings", "generate", "stream"]
