"""The result of calling a tokenizer: a dict of columns that also allows attribute access."""

from __future__ import annotations

from ..errors import LmatlasError
from ..outputs import AttrDict


class BatchEncoding(AttrDict):
    """The result of calling a tokenizer: a dict (``input_ids``, ``attention_mask``, ...) that
    also allows attribute access, plus the ``tokenizers`` Encoding of each row (``encodings``)
    for offsets, word ids and sequence ids."""

    def __init__(self, data: dict, encodings: list | None = None):
        super().__init__(data)
        self.encodings = encodings

    def _encoding(self, index: int):
        if not self.encodings:
            raise LmatlasError("this result has no encodings to look into")
        return self.encodings[index]

    def tokens(self, index: int = 0) -> list[str]:
        return self._encoding(index).tokens

    def word_ids(self, index: int = 0) -> list[int | None]:
        return self._encoding(index).word_ids

    def sequence_ids(self, index: int = 0) -> list[int | None]:
        return self._encoding(index).sequence_ids

    def to(self, device) -> "BatchEncoding":
        """Move every tensor to ``device`` (for ``return_tensors="pt"``); returns self."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self
