"""XLNet's objective as a recipe: permutation language modelling (``PermutationLMRecipe``), its
task in ``tasks.permutation`` and its masks in ``objectives.permutation_lm``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .fields import FieldError
from .recipes import Pretraining


@dataclass(frozen=True)
class PermutationLMRecipe(Pretraining):
    """XLNet: each sequence in a random factorisation order, its last 1/``partial_k`` predicted
    by the query stream from the tokens before it in the order (the paper's K, 6 by default)."""

    partial_k: int = 6

    objective: ClassVar[str] = "permutation-lm"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.partial_k < 1:
            raise FieldError(lambda f: f"{f('partial_k')} must be at least 1, not {self.partial_k}")

    def _check(self):
        model_type = super()._check()
        if model_type not in (None, "xlnet"):
            raise FieldError(lambda f: f"{f('model')} {self.model} is a {model_type}; permutation language "
                                       "modelling trains XLNet (e.g. xlnet-base-cased)")
        return model_type

    def build(self, tokenizer, tokenizer_dir, seed):
        from .tasks import PermutationLMTask

        model = self._model(tokenizer)
        train, val = self._streams(tokenizer, self.block, model.config.vocab_size)
        return PermutationLMTask(model, tokenizer_dir, train, val, self.block, seed, self.partial_k, self.eval_windows)


__all__ = ["PermutationLMRecipe"]
