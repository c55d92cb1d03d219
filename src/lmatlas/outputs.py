"""Dicts whose keys read as attributes too, as transformers' outputs and encodings do:
``out.logits`` and ``out["logits"]`` are the same tensor."""

from __future__ import annotations

from typing import Any


class AttrDict(dict):
    """A dict whose keys are also attributes."""

    # What an absent key reads as: transformers' model outputs give None for a field they did not
    # fill; its tokenizers' encodings raise AttributeError.
    absent_is_none = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self:
            return self[name]
        if self.absent_is_none:
            return None
        raise AttributeError(name)


class ModelOutput(AttrDict):
    """What a model's forward pass returns (``logits``, ``last_hidden_state``, ...); absent
    fields read as None."""

    absent_is_none = True


__all__ = ["AttrDict", "ModelOutput"]
