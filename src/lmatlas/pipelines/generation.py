"""text-generation: continue a prompt with a decoder (GPT-2, GPT-Neo, OPT, BLOOM, Falcon, Llama)."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import LmatlasError
from .base import Option, Pipeline, boolean, choice, mapping, where
from .decoding import (
    call_settings,
    generate_options,
    model_defaults,
    optional_bool,
    optional_string,
    task_params,
)

# transformers' text-generation defaults (its pipeline's own generation config): a long sample.
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}


class TextGeneration(Pipeline):
    """``[{"generated_text": ...}]`` per prompt (one per returned sequence); a list of such lists
    for a list of prompts.

    Defaults as transformers' pipeline: sample 256 new tokens at temperature 0.7, unless the
    model's generation_config.json (or config.json's task_specific_params) says otherwise; any
    ``generate()`` argument (``max_new_tokens``, ``do_sample``, ``num_beams``, ``top_k``,
    ``seed``, ...) overrides them. ``return_full_text=False`` gives only the new text;
    ``return_tensors=True`` the token ids instead of text.
    """

    task = "text-generation"
    OPTIONS = {
        "return_full_text": Option(None, optional_bool, "the prompt and the new text (default), or only the new text", "bool"),
        "return_text": Option(None, optional_bool, "return the text (default True)", "bool"),
        "return_tensors": Option(None, optional_bool, "return the token ids instead of the text", "bool"),
        "clean_up_tokenization_spaces": Option(True, boolean, "remove spaces before punctuation in decoded text", "bool"),
        "skip_special_tokens": Option(True, boolean, "leave special tokens out of the text", "bool"),
        "prefix": Option(None, optional_string, "text put before every prompt (not returned)"),
        "stop_sequence": Option(None, optional_string, "stop at this text's token(s), as transformers' stop_sequence"),
        "handle_long_generation": Option(None, lambda n, v: None if v is None else choice("hole")(n, v),
                                         "'hole': cut the prompt's beginning to leave room for the new tokens"),
        "tokenizer_encode_kwargs": Option(None, mapping, "extra tokenizer arguments for the prompt", "json"),
        "add_special_tokens": Option(False, boolean, "add the tokenizer's special tokens around the prompt", "bool"),
        **generate_options(),
    }

    def __init__(self, model, tokenizer, **kwargs: Any):
        if not getattr(model, "is_decoder", False):
            raise LmatlasError("text-generation needs a decoder with a causal-lm head (GPT-2, OPT, Llama, ...)")
        super().__init__(model, tokenizer, **kwargs)
        self.defaults, self.model_prefix = self._defaults()

    def _defaults(self) -> tuple[dict, str | None]:
        settings = model_defaults(self.model, self.tokenizer, PIPELINE_DEFAULTS)
        params, prefix = task_params(self.model, "text-generation")
        settings.update(params)
        return settings, prefix

    def check_input(self, item: Any, index: int | None) -> Any:
        if isinstance(item, (list, dict)):
            raise LmatlasError(
                f"{where(index)}chat messages are not supported by this pipeline yet; give the prompt as text "
                "(or use `lmatlas generate --chat`)"
            )
        return super().check_input(item, index)

    def run(self, items: list, opts: dict, batch_size: int) -> list:
        gen = call_settings(self.defaults, opts)
        if opts["stop_sequence"] is not None:
            # transformers makes every token of the stop sequence an end-of-sequence token.
            gen["eos_token_id"] = self.tokenizer.encode(opts["stop_sequence"], add_special_tokens=False)
        prefix = opts["prefix"] if opts["prefix"] is not None else (self.model_prefix or "")
        if prefix:
            # Lengths count the prompt, so the prefix's tokens come on top (as transformers).
            extra = len(self._encode(prefix, opts))
            if gen.get("max_new_tokens") is None:
                gen["max_length"] = gen["max_length"] + extra
            if gen.get("min_new_tokens") is None and opts.get("min_length") is not None:
                gen["min_length"] = gen["min_length"] + extra
        mode = self._return_mode(opts)
        prompts = [self._prompt(prefix + text, opts, gen) for text in items]
        results = []
        for start in range(0, len(items), batch_size):
            chunk = list(range(start, min(start + batch_size, len(items))))
            results += self._generate([items[i] for i in chunk], [prompts[i] for i in chunk], gen, opts, mode)
        return results

    def _encode(self, text: str, opts: dict) -> list[int]:
        kwargs = {"add_special_tokens": opts["add_special_tokens"], **(opts["tokenizer_encode_kwargs"] or {})}
        return self.tokenizer(text, **kwargs)["input_ids"]

    def _prompt(self, text: str, opts: dict, gen: dict) -> list[int]:
        ids = self._encode(text, opts)
        if opts["handle_long_generation"] == "hole":
            new = gen["max_new_tokens"] if gen.get("max_new_tokens") is not None else gen["max_length"] - len(ids)
            limit = self.tokenizer.model_max_length
            if len(ids) + new > limit:
                keep = limit - new
                if keep <= 0:
                    raise LmatlasError(f"handle_long_generation='hole': {new} new tokens do not fit the model's {limit}")
                ids = ids[-keep:]
        return ids

    @staticmethod
    def _return_mode(opts: dict) -> str:
        if opts["return_full_text"] is not None:
            if opts["return_text"] is not None or opts["return_tensors"] is not None:
                raise LmatlasError("return_full_text cannot be combined with return_text or return_tensors")
            return "full" if opts["return_full_text"] else "new"
        if opts["return_tensors"]:
            if opts["return_text"] is not None:
                raise LmatlasError("return_text and return_tensors cannot be combined")
            return "tensors"
        return "full"

    def _generate(self, texts: list[str], prompts: list[list[int]], gen: dict, opts: dict, mode: str) -> list:
        width = max(len(p) for p in prompts)
        pad = gen.get("pad_token_id")
        if len(prompts) > 1 and pad is None:
            # No pad token: one prompt at a time.
            return [r for t, p in zip(texts, prompts) for r in self._generate([t], [p], gen, opts, mode)]
        pad = 0 if pad is None else pad
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            if p:
                ids[row, width - len(p) :] = torch.tensor(p)
                mask[row, width - len(p) :] = 1
        if width == 0:
            raise LmatlasError("the prompt is empty (give some text, or a prefix)")
        kwargs = {k: v for k, v in gen.items() if v is not None}
        if opts.get("stop_strings") is not None:
            kwargs["tokenizer"] = self.tokenizer
        out = self.model.generate(ids, attention_mask=mask, **kwargs)
        per_prompt = out.shape[0] // len(prompts)
        results = []
        for row, (text, p) in enumerate(zip(texts, prompts)):
            records = []
            for seq in out[row * per_prompt : (row + 1) * per_prompt].tolist():
                seq = seq[width - len(p) :]  # drop the left padding
                if mode == "tensors":
                    records.append({"generated_token_ids": seq})
                    continue
                decode = dict(
                    skip_special_tokens=opts["skip_special_tokens"],
                    clean_up_tokenization_spaces=opts["clean_up_tokenization_spaces"],
                )
                full = self.tokenizer.decode(seq, **decode)
                new = full[len(self.tokenizer.decode(p, **decode)) :]
                records.append({"generated_text": text + new if mode == "full" else new})
            results.append(records)
        return results
