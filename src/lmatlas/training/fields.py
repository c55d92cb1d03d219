"""``FieldError``: a user error about the fields of a training recipe or ``TrainConfig``.

Python callers set fields (``block``, ``lr``); the command line sets the same values through
flags (``--block``, ``--lr``). The error keeps how to write its sentence for any naming, so
that each reports the names its user typed.
"""

from __future__ import annotations

from typing import Callable

from ..errors import LmatlasError

#: Writes the sentence given how each field is called (``str`` keeps the field names).
Sentence = Callable[[Callable[[str], str]], str]


class FieldError(LmatlasError):
    """``FieldError(lambda f: f"{f('block')} must be at least 2")`` reads "block must be at
    least 2"; ``err.naming(flag)`` writes it with other names, e.g. "--block must be ..."."""

    def __init__(self, sentence: Sentence):
        self.sentence = sentence
        super().__init__(sentence(str))

    def naming(self, name: Callable[[str], str]) -> str:
        return self.sentence(name)


__all__ = ["FieldError"]
