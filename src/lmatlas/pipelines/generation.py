"""text-generation: continue a prompt with a decoder (GPT-2, GPT-Neo, OPT, BLOOM, Falcon, Llama),
or a chat with a model that has a chat template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..chat import apply_chat_template, check_messages, extend_final, template_of
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

# For a chat, transformers hands tokenizer_encode_kwargs to apply_chat_template, so they mean what
# they mean there: truncation, padding, max_length (and tokenizer_kwargs) go to the tokenizer,
# chat_template picks the template, anything else fills the template (tools, documents,
# enable_thinking, ...). The keys in _CHAT_SET_BY_PIPELINE are the pipeline's own to set.
_CHAT_TOKENIZER_ARGS = ("truncation", "padding", "max_length")
_CHAT_SET_BY_PIPELINE = ("add_generation_prompt", "continue_final_message", "tokenize", "return_tensors",
                         "return_dict", "return_assistant_tokens_mask")


@dataclass(frozen=True)
class Chat:
    """One conversation among the inputs (a list of messages is not a list of prompts)."""

    messages: list[dict]

    def continues(self, opts: dict) -> bool:
        """Whether the model goes on with the final message rather than answering it: by
        default when the assistant spoke last (a prefilled answer), as transformers."""
        if opts["continue_final_message"] is not None:
            return opts["continue_final_message"]
        return self.messages[-1]["role"] == "assistant"

    def with_reply(self, new: str, opts: dict) -> list[dict]:
        if self.continues(opts):
            return self.messages[:-1] + [extend_final(self.messages[-1], new)]
        return self.messages + [{"role": "assistant", "content": new}]


class TextGeneration(Pipeline):
    """``[{"generated_text": ...}]`` per prompt (one per returned sequence); a list of such lists
    for a list of prompts.

    A chat — a list of ``{"role", "content"}`` messages — is formatted with the tokenizer's chat
    template (``tokenizer_encode_kwargs={"chat_template": ...}`` gives another) and answered:
    ``generated_text`` is then the conversation with the assistant's new message at the end. A
    list of chats gives a list of such lists. When the chat ends with the assistant's message the
    model continues that message (``continue_final_message`` decides otherwise).

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
        "tokenizer_encode_kwargs": Option(None, mapping, "extra tokenizer arguments for the prompt; for a chat, "
                                          "also chat_template and the template's variables", "json"),
        "add_special_tokens": Option(None, optional_bool,
                                     "add the tokenizer's special tokens around the prompt (default: as the "
                                     "tokenizer does, e.g. Llama's <s>)", "bool"),
        "continue_final_message": Option(None, optional_bool, "chats: continue the final message instead of "
                                         "answering it (default: when the assistant spoke last)", "bool"),
        **generate_options(),
    }

    def __init__(self, model, tokenizer, **kwargs: Any):
        if not (getattr(model, "is_decoder", False) or getattr(model, "decodes_with_memory", False)):
            raise LmatlasError("text-generation needs a decoder with a causal-lm head (GPT-2, OPT, Llama, ...)")
        super().__init__(model, tokenizer, **kwargs)
        self.defaults, self.model_prefix = self._defaults()

    def _defaults(self) -> tuple[dict, str | None]:
        settings = model_defaults(self.model, self.tokenizer, PIPELINE_DEFAULTS)
        params, prefix = task_params(self.model, "text-generation")
        settings.update(params)
        return settings, prefix

    def split_inputs(self, inputs: Any) -> tuple[bool, list]:
        # A list of messages is one chat (a list of lists, several), as in transformers.
        if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], dict):
            return True, [self.check_input(list(inputs), None)]
        return super().split_inputs(inputs)

    def check_input(self, item: Any, index: int | None) -> Any:
        if isinstance(item, (list, tuple)):
            try:
                return Chat(check_messages(item))
            except LmatlasError as e:
                raise LmatlasError(f"{where(index)}{e}") from None
        if not isinstance(item, str):
            what = "a single message (put it in a list)" if isinstance(item, dict) else type(item).__name__
            raise LmatlasError(
                f"{where(index)}text-generation takes a prompt (a string), a chat (a list of messages) or a "
                f"list of these, not {what}"
            )
        return item

    def run(self, items: list, opts: dict, batch_size: int) -> list:
        gen = call_settings(self.defaults, opts)
        if opts["stop_sequence"] is not None:
            # transformers makes every token of the stop sequence an end-of-sequence token.
            gen["eos_token_id"] = self.tokenizer.encode(opts["stop_sequence"], add_special_tokens=False)
        prefix = opts["prefix"] if opts["prefix"] is not None else (self.model_prefix or "")
        if prefix:
            # Lengths count the prompt, so the prefix's tokens come on top (as transformers).
            # (Counted as transformers counts them: without tokenizer_encode_kwargs, which for a
            # chat are the template's.)
            extra = len(self.tokenizer(prefix, add_special_tokens=bool(opts["add_special_tokens"]))["input_ids"])
            if gen.get("max_new_tokens") is None:
                gen["max_length"] = gen["max_length"] + extra
            if gen.get("min_new_tokens") is None and opts.get("min_length") is not None:
                gen["min_length"] = gen["min_length"] + extra
        mode = self._return_mode(opts)
        template = None
        if any(isinstance(item, Chat) for item in items):  # one template for the call, checked once
            template = template_of(self.tokenizer, self._chat_args(opts)[0].get("chat_template"))
        prompts = []
        for i, item in enumerate(items):
            try:
                if isinstance(item, Chat):
                    ids = self._chat_ids(item, template, opts)
                else:
                    # A prefix is for text prompts; transformers leaves chats as the template makes them.
                    ids = self._encode(prefix + item, opts)
                prompts.append(self._cut(ids, gen, opts))
            except LmatlasError as e:
                raise LmatlasError(f"{where(i if len(items) > 1 else None)}{e}") from None
        results = []
        for start in range(0, len(items), batch_size):
            chunk = list(range(start, min(start + batch_size, len(items))))
            results += self._generate([items[i] for i in chunk], [prompts[i] for i in chunk], gen, opts, mode)
        return results

    def _encode(self, text: str, opts: dict) -> list[int]:
        # Unless asked, the tokenizer adds its special tokens as it always does (transformers
        # leaves add_special_tokens out of the call then).
        asked = {} if opts["add_special_tokens"] is None else {"add_special_tokens": opts["add_special_tokens"]}
        return self.tokenizer(text, **{**asked, **(opts["tokenizer_encode_kwargs"] or {})})["input_ids"]

    @staticmethod
    def _chat_args(opts: dict) -> tuple[dict, dict]:
        """tokenizer_encode_kwargs for a chat, split as transformers uses them: (for the
        template, for the tokenizer)."""
        given = dict(opts["tokenizer_encode_kwargs"] or {})
        for key in _CHAT_SET_BY_PIPELINE:
            if key in given:
                hint = " (use the continue_final_message option)" if key == "continue_final_message" else ""
                raise LmatlasError(f"tokenizer_encode_kwargs cannot set {key} for a chat: the pipeline sets it{hint}")
        tokenizer_args = {k: given.pop(k) for k in _CHAT_TOKENIZER_ARGS if k in given}
        tokenizer_args.update(given.pop("tokenizer_kwargs", None) or {})
        return given, tokenizer_args

    def _chat_ids(self, chat: Chat, template: str, opts: dict) -> list[int]:
        template_args, tokenizer_args = self._chat_args(opts)
        template_args["chat_template"] = template
        cont = chat.continues(opts)
        text = apply_chat_template(
            self.tokenizer, chat.messages, add_generation_prompt=not cont, continue_final_message=cont, **template_args
        )
        # The template writes the special tokens itself (add_special_tokens is not for chats).
        return self.tokenizer(text, **{**tokenizer_args, "add_special_tokens": False})["input_ids"]

    def _cut(self, ids: list[int], gen: dict, opts: dict) -> list[int]:
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

    def _generate(self, items: list, prompts: list[list[int]], gen: dict, opts: dict, mode: str) -> list:
        width = max(len(p) for p in prompts)
        pad = gen.get("pad_token_id")
        uneven = len({len(p) for p in prompts}) > 1
        if len(prompts) > 1 and (pad is None or (uneven and (not getattr(self.model, "reads_attention_mask", True)
                                                              or getattr(self.model, "decodes_with_memory", False)))):
            # No pad token, a model that reads no mask (Transformer-XL), or padding XLNet would
            # read as text (its generation drops the mask, as transformers' does): one prompt at a time.
            return [r for t, p in zip(items, prompts) for r in self._generate([t], [p], gen, opts, mode)]
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
        for row, (item, p) in enumerate(zip(items, prompts)):
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
                if mode == "new":
                    records.append({"generated_text": new})
                elif isinstance(item, Chat):
                    records.append({"generated_text": item.with_reply(new, opts)})
                else:
                    records.append({"generated_text": item + new})
            results.append(records)
        return results
