"""summarization, translation and text2text-generation: an encoder-decoder (BART, T5, Pegasus,
mBART, Marian) writes a new text from each input.

As transformers' Text2TextGenerationPipeline and its summarization and translation subclasses:
the model's task prefix (T5's "summarize: ", "translate English to German: ") goes before each
text, the encoder reads it, ``generate()`` writes the output — by default with 4 beams and up to
256 new tokens, unless the model's generation settings say otherwise — and the output is decoded
without its special tokens. The inputs of a call run through the model in batches, right-padded.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import LmatlasError
from ..generation.language import language_code, target_language
from .base import _UNSET, Option, Pipeline, boolean, where
from .decoding import (
    call_settings,
    generate_options,
    model_defaults,
    optional_bool,
    optional_string,
    task_names,
    task_params,
)

# transformers' defaults for these pipelines (their own generation config).
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "num_beams": 4}
_TRUNCATE = {"longest_first", "only_first", "only_second"}


def _truncation(name: str, value: Any) -> bool:
    """True/False, or one of transformers' truncation strategies (a string or its enum): for a
    single text every strategy cuts the same tokens."""
    value = getattr(value, "value", value)
    if isinstance(value, str) and value.lower() in _TRUNCATE | {"do_not_truncate"}:
        return value.lower() != "do_not_truncate"
    return boolean(name, value)


class Text2TextGeneration(Pipeline):
    """``[{"generated_text": ...}]`` per text, one record per returned sequence; for a list of
    texts, one record per text (a list of records each with ``num_return_sequences`` > 1).

    ``return_tensors=True`` gives the token ids (``generated_token_ids``) instead of the text;
    any ``generate()`` argument (``num_beams``, ``max_new_tokens``, ``max_length``,
    ``min_length``, ``no_repeat_ngram_size``, ``length_penalty``, ``num_return_sequences``,
    ``seed``, ...) overrides the defaults. A text longer than the model reads is an error unless
    ``truncation=True``.
    """

    task = "text2text-generation"
    return_name = "generated"
    OPTIONS = {
        "return_text": Option(None, optional_bool, "return the decoded text (the default)", "bool"),
        "return_tensors": Option(None, optional_bool, "return the token ids instead of the text", "bool"),
        "clean_up_tokenization_spaces": Option(False, boolean, "remove spaces before punctuation in the text",
                                               "bool"),
        "truncation": Option(False, _truncation, "cut texts longer than the model can read", "bool"),
        "prefix": Option(None, optional_string,
                         "text put before every input (default: the model's, e.g. T5's 'summarize: ')"),
        "stop_sequence": Option(None, optional_string, "end an output once it holds this text"),
        **generate_options(),
    }

    def __init__(self, model, tokenizer, **kwargs: Any):
        if not getattr(model, "is_encoder_decoder", False) or getattr(model, "head_name", None) != "seq2seq-lm":
            raise LmatlasError(
                f"{kwargs.get('task') or self.task} needs an encoder-decoder with its language-model head "
                "(BART, T5, Pegasus, mBART, Marian)"
            )
        super().__init__(model, tokenizer, **kwargs)
        self.defaults = model_defaults(model, tokenizer, PIPELINE_DEFAULTS)

    def __call__(self, inputs: Any = _UNSET, *, batch_size: int | None = None, **options: Any):
        results = super().__call__(inputs, batch_size=batch_size, **options)
        # As transformers: a list of texts gives one record per text when each has one.
        if isinstance(inputs, list) and all(len(r) == 1 for r in results):
            return [r[0] for r in results]
        return results

    def check_input(self, item: Any, index: int | None) -> Any:
        item = super().check_input(item, index)
        if not item.strip():
            raise LmatlasError(f"{where(index)}the text is empty")
        return item

    # -- a call -------------------------------------------------------------------------------

    def run(self, items: list, opts: dict, batch_size: int) -> list:
        tensors = self._returns_tensors(opts)
        task, extra, src_lang = self.call_task(opts)
        params, model_prefix = task_params(self.model, task)
        gen = call_settings({**self.defaults, **params, **extra}, opts)
        if opts["stop_sequence"] is not None:
            # The output ends once its text holds the stop sequence, and still at the model's own
            # end token (transformers replaces that with the stop sequence's first token).
            gen["stop_strings"] = [*_listed(gen.get("stop_strings")), opts["stop_sequence"]]
        prefix = opts["prefix"] if opts["prefix"] is not None else (model_prefix or "")
        with self._source_language(src_lang):
            sources = []
            for i, text in enumerate(items):
                try:
                    sources.append(self._encode(prefix + text, bool(prefix), opts["truncation"]))
                except LmatlasError as e:
                    raise LmatlasError(f"{where(i if len(items) > 1 else None)}{e}") from None
        self.check_lengths([len(s) for s in sources], gen, opts)
        # Longest first, so that each batch pads little; results go back in input order.
        order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
        rows: list[list[list[int]] | None] = [None] * len(sources)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for i, seqs in zip(chunk, self._generate([sources[i] for i in chunk], gen)):
                rows[i] = seqs
        return [[self._record(seq, tensors, opts) for seq in seqs] for seqs in rows]  # type: ignore[union-attr]

    def call_task(self, opts: dict) -> tuple[str, dict, str | None]:
        """The task_specific_params entry the call reads, settings the task adds, and the source
        language to encode with (translation sets them)."""
        return self.task, {}, None

    @contextmanager
    def _source_language(self, code: str | None):
        """mBART: encode with ``code`` around the text, then leave the tokenizer as it was."""
        if code is None or code == self.tokenizer.src_lang:
            yield
            return
        before = self.tokenizer.src_lang
        self.tokenizer.src_lang = code
        try:
            yield
        finally:
            self.tokenizer.src_lang = before

    def _encode(self, text: str, prefixed: bool, truncation: bool) -> list[int]:
        limit = self.max_length()
        kwargs = {"truncation": True, "max_length": limit} if truncation and limit is not None else {}
        ids = self.tokenizer(text, **kwargs)["input_ids"]
        if limit is not None and len(ids) > limit:
            # (transformers indexes past the position table, or for T5 only warns)
            with_prefix = " with the prefix" if prefixed else ""
            raise LmatlasError(
                f"the text is {len(ids)} tokens long{with_prefix}, more than the {limit} the model reads; "
                "pass truncation=True to cut it"
            )
        return ids

    def check_lengths(self, lengths: list[int], gen: dict, opts: dict) -> None:
        """Warnings about lengths that will not give what the task usually wants."""

    def _generate(self, sources: list[list[int]], gen: dict) -> list[list[list[int]]]:
        """Each source's returned sequences (decoder start token first), cut to the longest of
        them: the padding another source's longer output adds is not returned."""
        pad = self.tokenizer.pad_token_id
        if pad is None and len(sources) > 1:
            return [out for s in sources for out in self._generate([s], gen)]
        width = max(len(s) for s in sources)
        ids = torch.full((len(sources), width), 0 if pad is None else pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(sources):  # right padding: each source's positions start at 0
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        kwargs = dict(gen)
        if kwargs.get("stop_strings"):
            kwargs["tokenizer"] = self.tokenizer
        out = self.model.generate(ids, attention_mask=mask, **kwargs).tolist()
        per_source = len(out) // len(sources)
        eos = set(_listed(gen.get("eos_token_id")))
        results = []
        for row in range(len(sources)):
            seqs = out[row * per_source : (row + 1) * per_source]
            width = max(_length(seq, eos) for seq in seqs)
            results.append([seq[:width] for seq in seqs])
        return results

    def _returns_tensors(self, opts: dict) -> bool:
        text, tensors = opts["return_text"], opts["return_tensors"]
        if text is not None and tensors is not None and text == tensors:
            what = "return_text and return_tensors cannot both be True" if text else "nothing is left to return"
            raise LmatlasError(f"{what}: the output is either the text or the token ids (return_tensors=True)")
        if tensors is not None:
            return tensors
        # return_text=False asks for the other output, the token ids (transformers ignores it).
        return text is False

    def _record(self, seq: list[int], tensors: bool, opts: dict) -> dict:
        if tensors:
            return {f"{self.return_name}_token_ids": seq}
        text = self.tokenizer.decode(
            seq, skip_special_tokens=True, clean_up_tokenization_spaces=opts["clean_up_tokenization_spaces"]
        )
        return {f"{self.return_name}_text": text}


def _listed(value: Any) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, (int, str)) else list(value)


def _length(seq: list[int], eos: set[int]) -> int:
    """How long a returned sequence is: up to its end token (after the decoder's start token,
    which is the end token for BART), or all of it if it ran to the length limit."""
    for at in range(1, len(seq)):
        if seq[at] in eos:
            return at + 1
    return len(seq)


def _new_tokens(gen: dict) -> int:
    """How many tokens an output may have after the decoder's start token."""
    return gen["max_new_tokens"] if gen.get("max_new_tokens") is not None else gen["max_length"] - 1


def _warn(message: str) -> None:
    # (user code -> __call__ -> Pipeline.__call__ -> run -> check_lengths -> here)
    warnings.warn(message, UserWarning, stacklevel=6)


class Summarization(Text2TextGeneration):
    """``[{"summary_text": ...}]`` per text; as text2text-generation, with the model's
    ``task_specific_params["summarization"]`` (BART's lengths, T5's "summarize: " prefix)."""

    task = "summarization"
    return_name = "summary"

    def check_lengths(self, lengths: list[int], gen: dict, opts: dict) -> None:
        most = _new_tokens(gen) + 1
        if gen.get("min_length", 0) > most:
            _warn(
                f"min_length={gen['min_length']} is more than a summary may have ({most} tokens with the "
                "decoder's start token): every summary will stop at that limit"
            )
        # Only a length the call asks for: the model's defaults are the checkpoint's own choice.
        if opts.get("max_length") is None and opts.get("max_new_tokens") is None:
            return
        shortest = min(lengths)
        if _new_tokens(gen) > shortest:
            _warn(
                f"a summary may have up to {_new_tokens(gen)} tokens, but an input has only {shortest}; "
                f"summaries are usually shorter than their text (e.g. max_new_tokens={max(shortest // 2, 1)})"
            )


class Translation(Text2TextGeneration):
    """``[{"translation_text": ...}]`` per text.

    The languages come from ``src_lang`` / ``tgt_lang``, else from a task name such as
    ``translation_en_to_de``. mBART needs them (its language codes, e.g. ``en_XX``; a two-letter
    ``en`` stands for the one code that starts with it): the source code goes around each text and
    the target code starts the output (``generation.language``). Other models translate one pair;
    the languages pick their ``task_specific_params`` entry (T5's "translate English to German: ").
    """

    task = "translation"
    return_name = "translation"
    OPTIONS = {
        **Text2TextGeneration.OPTIONS,
        "src_lang": Option(None, optional_string, "the language of the texts (mBART: a code such as en_XX)"),
        "tgt_lang": Option(None, optional_string, "the language to translate into (mBART: a code such as ro_RO)"),
    }

    def __init__(self, model, tokenizer, **kwargs: Any):
        super().__init__(model, tokenizer, **kwargs)
        if self.task == "translation":
            # As transformers: a model with translation entries in task_specific_params uses the
            # first one when the task name gives no languages.
            pairs = [t for t in task_names(model) if t.startswith("translation")]
            if pairs:
                warnings.warn(
                    f"'translation' gives no languages; using the model's {pairs[0]!r} "
                    f"(it also has: {', '.join(pairs[1:]) or 'nothing else'})",
                    UserWarning,
                    stacklevel=3,
                )
                self.task = pairs[0]

    def call_task(self, opts: dict) -> tuple[str, dict, str | None]:
        named = _pair(self.task)
        src = opts["src_lang"] if opts["src_lang"] is not None else named[0]
        tgt = opts["tgt_lang"] if opts["tgt_lang"] is not None else named[1]
        if self.tokenizer.language_layout is None:
            # One language pair per model: the languages only choose its task entry.
            key = f"translation_{src}_to_{tgt}"
            given = opts["src_lang"] is not None or opts["tgt_lang"] is not None
            return (key if given and key in task_names(self.model) else self.task), {}, None
        src = language_code(self.tokenizer, src if src is not None else self.tokenizer.src_lang, "src_lang")
        if tgt is None and self.tokenizer.tgt_lang is None:
            raise LmatlasError(
                "translation with mBART needs the target language: give tgt_lang= (one of its codes: "
                f"{', '.join(self.tokenizer.lang_code_to_id)}), or a task name such as translation_en_to_ro"
            )
        target = target_language(self.tokenizer, tgt if tgt is not None else self.tokenizer.tgt_lang)
        # The call's own arguments (e.g. forced_bos_token_id=) win.
        return self.task, {k: v for k, v in target.items() if opts.get(k) is None}, src

    def check_lengths(self, lengths: list[int], gen: dict, opts: dict) -> None:
        most = _new_tokens(gen)
        longest = max(lengths)
        if longest > 0.9 * most:
            _warn(
                f"an input has {longest} tokens and a translation may have at most {most}, so it may be cut "
                f"short; consider a larger max_new_tokens (e.g. max_new_tokens={2 * longest})"
            )


def _pair(task: str) -> tuple[str | None, str | None]:
    """(xx, yy) of a task name translation_xx_to_yy, else (None, None)."""
    parts = task.split("_")
    if len(parts) == 4 and parts[0] == "translation" and parts[2] == "to":
        return parts[1], parts[3]
    return None, None
