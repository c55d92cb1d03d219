"""When a row stops: an end-of-sequence token, or a stop string in its text."""

from __future__ import annotations

import torch

from ..errors import LmatlasError


def hits_eos(tokens: torch.Tensor, eos: torch.Tensor | None) -> torch.Tensor:
    """Which of ``tokens`` (any shape) are end-of-sequence tokens."""
    if eos is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    return torch.isin(tokens, eos.to(tokens.device))


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

