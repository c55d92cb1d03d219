"""Preference data: JSON Lines rows of a ``prompt`` and two replies, ``chosen`` and ``rejected``
(with an optional ``margin``), or of a prompt alone for online training.

A prompt is text or a list of chat messages; a reply is text or a list of messages (the
assistant's). With a model whose tokenizer has a chat template, text becomes a user message and
a reply an assistant message, and both are rendered with the template, so that the model reads
what it was tuned on; otherwise the prompt's tokens are followed by the reply's and the
end-of-sequence token. Prompt and reply are kept apart as token ids: the losses score replies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..chat import apply_chat_template
from ..errors import LmatlasError
from .data import read_table

PathLike = str | os.PathLike


@dataclass
class Pair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    margin: float = 0.0


@dataclass
class Prompt:
    ids: list[int]
    text: str  # the prompt as the reward function reads it
    columns: dict[str, Any] = field(default_factory=dict)  # the row's other fields


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _messages(value: Any, role: str, where: str, name: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in value):
        return value
    raise LmatlasError(f"{where}: {name!r} must be text or a list of chat messages (dicts with 'role' and 'content')")


def _plain(value: Any, where: str, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return "\n".join(str(m["content"]) for m in value)
    raise LmatlasError(f"{where}: {name!r} must be text or a list of chat messages (dicts with 'role' and 'content')")


def prompt_text(tokenizer, prompt: Any, where: str) -> str:
    """The prompt as the model reads it: rendered with the chat template up to where the
    assistant's reply starts, or the text itself."""
    if has_template(tokenizer):
        return apply_chat_template(tokenizer, _messages(prompt, "user", where, "prompt"), add_generation_prompt=True)
    return _plain(prompt, where, "prompt")


def encode_reply(tokenizer, prompt: Any, reply: Any, where: str, name: str) -> tuple[list[int], list[int]]:
    """(prompt ids, reply ids) of one prompt and reply."""
    if has_template(tokenizer):
        messages = _messages(prompt, "user", where, "prompt")
        head = apply_chat_template(tokenizer, messages, add_generation_prompt=True)
        whole = apply_chat_template(tokenizer, messages + _messages(reply, "assistant", where, name))
        if not whole.startswith(head):
            raise LmatlasError(f"{where}: the chat template renders the prompt differently once {name!r} follows it, "
                               "so the reply's tokens cannot be told apart")
        ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        return ids, tokenizer(whole[len(head):], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    ids = tokenizer(_plain(prompt, where, "prompt"))["input_ids"]
    reply_ids = tokenizer(_plain(reply, where, name), add_special_tokens=False)["input_ids"]
    return ids, reply_ids + ([eos] if eos is not None else [])


def check_prompt(ids: Sequence[int], max_length: int, where: str, room: int = 1) -> None:
    """A prompt must leave ``room`` tokens for its reply within ``max_length``."""
    if len(ids) + room > max_length:
        raise LmatlasError(f"{where}: the prompt has {len(ids)} tokens, which leaves no room for a reply within the "
                           f"{max_length} tokens the model reads (--max-length)")


def read_pairs(path: PathLike, tokenizer, max_length: int) -> list[Pair]:
    """The pairs of a JSON Lines file, tokenised; replies cut to fit ``max_length`` with their
    prompt."""
    pairs = []
    for n, row in enumerate(read_table(path, "jsonl"), 1):
        where = f"{path}, row {n}"
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise LmatlasError(f"{where}: needs 'prompt', 'chosen' and 'rejected' (missing {', '.join(missing)})")
        if row["chosen"] == row["rejected"]:
            raise LmatlasError(f"{where}: 'chosen' and 'rejected' are the same reply, so the pair prefers nothing")
        prompt, chosen = encode_reply(tokenizer, row["prompt"], row["chosen"], where, "chosen")
        _, rejected = encode_reply(tokenizer, row["prompt"], row["rejected"], where, "rejected")
        check_prompt(prompt, max_length, where)
        room = max_length - len(prompt)
        margin = row.get("margin", 0.0)
        if not isinstance(margin, (int, float)) or isinstance(margin, bool):
            raise LmatlasError(f"{where}: 'margin' must be a number, not {margin!r}")
        pairs.append(Pair(prompt, chosen[:room], rejected[:room], float(margin)))
    return pairs


def read_prompts(path: PathLike, tokenizer, max_length: int, max_new_tokens: int) -> list[Prompt]:
    """The prompts of a JSON Lines file (a ``prompt`` per row; the other fields go to a reward
    function by name), tokenised to leave room for ``max_new_tokens``."""
    prompts = []
    for n, row in enumerate(read_table(path, "jsonl"), 1):
        where = f"{path}, row {n}"
        if "prompt" not in row:
            raise LmatlasError(f"{where}: needs a 'prompt'")
        text = prompt_text(tokenizer, row["prompt"], where)
        ids = tokenizer(text, add_special_tokens=not has_template(tokenizer))["input_ids"]
        check_prompt(ids, max_length, where, room=max_new_tokens)
        plain = _plain(row["prompt"], where, "prompt")
        prompts.append(Prompt(ids, plain, {k: v for k, v in row.items() if k != "prompt"}))
    return prompts


def split(items: list, val_fraction: float) -> tuple[list, list]:
    """The last ``val_fraction`` of ``items`` held out (none when fewer than 10 items)."""
    if val_fraction <= 0 or len(items) < 10:
        return items, []
    cut = max(1, int(len(items) * (1 - val_fraction)))
    return items[:cut], items[cut:]


__all__ = ["Pair", "Prompt", "check_prompt", "encode_reply", "has_template", "prompt_text", "read_pairs",
           "read_prompts", "split"]
