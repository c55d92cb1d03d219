"""A chat with a model: the messages so far, rendered with the tokenizer's chat template, and the
model's replies, streamed.

When the rendered conversation and the reply to come no longer fit in the model's positions, the
oldest exchanges go (a user message and the reply to it), never the system message or the newest
message; ``on_drop`` hears how many went. ``lmatlas chat`` and ``lmatlas generate --chat`` run
on this.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .chat import apply_chat_template, template_of
from .errors import LmatlasError
from .files import write_text_atomic


class Conversation:
    """The messages of one chat with ``model`` (a decoder with a chat template)."""

    def __init__(
        self,
        model,
        tokenizer,
        system: str | None = None,
        options: dict[str, Any] | None = None,
        on_drop: Callable[[int], None] | None = None,
    ):
        template_of(tokenizer)  # no template: one sentence now, not at the first message
        self.model, self.tokenizer = model, tokenizer
        self.options = dict(options or {})
        self.on_drop = on_drop
        self.system = system
        self.turns: list[dict[str, str]] = []

    @property
    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def _render(self, turns: list[dict[str, str]]) -> list[int]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        text = apply_chat_template(self.tokenizer, head + turns, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def reset(self) -> None:
        """Forget the exchanges (the system message stays)."""
        self.turns = []

    def save(self, path: str | Path) -> None:
        """The messages as JSON, as chat pipelines take them."""
        write_text_atomic(path, json.dumps(self.messages, ensure_ascii=False, indent=1) + "\n")

    def _context(self) -> int:
        return self.model.config.max_positions - self.model.config.position_offset

    def prompt_ids(self) -> list[int]:
        """The conversation rendered for the next reply, dropping the oldest exchanges until it
        and the reply fit in the model's positions."""
        room = self._context() - int(self.options.get("max_new_tokens", 0))
        alone = self._render(self.turns[-1:])
        if len(alone) > room:  # the newest message does not fit even by itself: nothing goes
            raise LmatlasError(
                f"the message is {len(alone)} tokens with its template, more than the {room} the model has room "
                f"for before its reply ({self._context()} positions)"
            )
        dropped = 0
        while len(ids := self._render(self.turns)) > room and len(self.turns) > 2:
            self.turns = self.turns[2:]  # the oldest user message and the reply to it
            dropped += 1
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)
        return ids

    def ask(self, text: str) -> list[int]:
        """Add the user's ``text``; the prompt for the reply (``answered`` then records it)."""
        if not text.strip():
            raise LmatlasError("the message is empty")
        self.turns.append({"role": "user", "content": text})
        try:
            return self.prompt_ids()
        except LmatlasError:
            self.turns.pop()
            raise

    def answered(self, text: str) -> None:
        self.turns.append({"role": "assistant", "content": text.strip()})

    def reply(self, text: str) -> Iterator[str]:
        """Add the user's ``text`` and yield the reply piece by piece; the reply joins the
        conversation as far as it went, also when the caller stops early (Ctrl-C)."""
        from .generation import stream

        ids = self.ask(text)
        pieces: list[str] = []
        self.answered("")
        try:
            for piece in stream(self.model, self.tokenizer, torch.tensor([ids]), **self.options):
                pieces.append(piece)
                self.turns[-1]["content"] = "".join(pieces)
                yield piece
        finally:
            self.turns[-1]["content"] = "".join(pieces).strip()


__all__ = ["Conversation"]
