"""One call's setup, and the model's forward pass that every decoding step makes.

``Run`` checks the prompt and the settings, encodes an encoder-decoder's source once and
allocates the cache; ``next_scores`` is the one place the decoding loops call the model.
"""

from __future__ import annotations

import torch

from .. import runtime
from ..errors import LmatlasError
from .settings import GenerationSettings, check, eos_list
from .stopping import StopStrings, hits_eos


def positions(mask: torch.Tensor) -> torch.Tensor:
    # transformers: cumsum of the mask - 1, with padding given position 1 (never attended).
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def next_scores(model, ids, mask, pos, cache) -> torch.Tensor:
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



class Run:
    """What one call works with: prompt, mask, settings, cache.

    For an encoder-decoder, ``input_ids`` / ``attention_mask`` are the source, encoded here once;
    the "prompt" the loop continues is the decoder's (``decoder_input_ids``, by default the
    decoder start token), as in transformers.
    """

    def __init__(self, model, input_ids, attention_mask, kwargs):
        self.encoder_decoder = getattr(model, "is_encoder_decoder", False)
        memory = getattr(model, "decodes_with_memory", False)  # XLNet
        usable = getattr(model, "is_decoder", False) or self.encoder_decoder or memory
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
        sliding = bool(kwargs.pop("sliding_window", False))
        _check_ids(input_ids, "input_ids")
        if input_ids.shape[1] == 0:
            raise LmatlasError("input_ids is empty: give at least one prompt token (e.g. the BOS token)")
        base = kwargs.pop("generation_config", None)
        s = GenerationSettings.resolve(model, kwargs, base)
        if memory:
            # XLNet's memory is carried whatever use_cache says, as transformers carries it.
            s.use_cache = True
        # The rows decoded at once: the runtime's hint (see ``runtime.decoding``).
        self.rows = input_ids.shape[0] * (s.num_beams if s.num_beams > 1 else (
            s.num_return_sequences if s.do_sample else 1))
        cfg = model.config
        eos = eos_list(s.eos_token_id)
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
            source_positions = cfg.usable_positions
            if source_positions is not None and input_ids.shape[1] > source_positions:
                raise LmatlasError(
                    f"the source is {input_ids.shape[1]} tokens long, but the encoder has only "
                    f"{source_positions} positions"
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
        # nanoGPT's sliding context: past the model's positions, each step reads the last
        # ``window`` tokens only (uncached), as its generate() crops the context to block_size.
        self.window = None
        if sliding and not self.encoder_decoder and cfg.usable_positions is not None:
            if s.max_length > cfg.usable_positions:
                if s.num_beams > 1:
                    raise LmatlasError("sliding_window decodes greedily or by sampling, not with beam search")
                self.window = cfg.usable_positions
        check(s, L, cfg.usable_positions, vocab, sliding=self.window is not None)
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
            # With a sliding window the cache serves until the window is full.
            length = max_length if self.window is None else min(max_length, self.window)
            return self.model.new_cache(rows, length) if use_cache else None
        # The cross-attention key/value projections, like the encoder, serve only the source.
        with runtime.decoding(self.model, runtime.MAX_PACKED_ROWS):
            return self.model.new_cache(
                rows, max_length, encoder_last_hidden_state=self.encoded, attention_mask=self.source_mask,
                use_cache=use_cache,
            )

    def expand(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids.repeat_interleave(n, dim=0), self.mask.repeat_interleave(n, dim=0)

    def hits_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        return hits_eos(tokens, self.eos)


def _check_ids(ids, name: str) -> None:
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise LmatlasError(f"{name} must be a 2-D tensor of token ids (batch, length)")

