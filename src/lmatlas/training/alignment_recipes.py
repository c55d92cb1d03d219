"""Typed recipes for learning from preferences: a reward model, DPO, and online RL (GRPO, RLOO,
PPO) against a reward. ``lmatlas.training.train`` runs them like the other recipes::

    from lmatlas.training import DPORecipe, TrainConfig, train

    train(DPORecipe(model="runs/sft/model", data="pairs.jsonl", beta=0.1),
          TrainConfig(out="runs/dpo", steps=200, lr=5e-6, batch_size=4))

``model`` is a checkpoint folder, a hub id or a GGUF file; ``data`` a JSON Lines file (see
``pairs``); ``val`` a held-out file (default: the last ``val_fraction`` of ``data``);
``max_length``: tokens of prompt and reply together.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import LmatlasError
from .alignment import DPO_LOSSES
from .config import TrainConfig
from .distributed import Context
from .fields import FieldError
from .trainer import Task

PathLike = str | os.PathLike


def tokenizer_folder(spec: PathLike, tokenizer, out: Path, ctx: Context) -> Path:
    """The folder whose tokenizer files a saved model gets: the model's own, or for a GGUF file
    (whose tokenizer lives in its metadata) ``out/tokenizer``, written here."""
    from ..checkpoint import resolve
    from ..gguf import find_gguf
    from ..tokenizer import save_tokenizer
    from . import distributed as dist_

    if find_gguf(spec) is None:
        return Path(spec) if Path(spec).expanduser().is_dir() else resolve(spec, weights=False)
    if ctx.main:
        save_tokenizer(tokenizer, out / "tokenizer")
    dist_.barrier(ctx)
    return out / "tokenizer"


def load_language_model(spec: PathLike, what: str):
    """A decoder with its language-model head, to train or to serve as a reference."""
    from ..loader import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load(spec, head="causal-lm", dequantize=True)
    if not model.is_decoder:
        raise LmatlasError(f"{what} {spec} is not a decoder (GPT-style), which this training needs")
    return model


def check_same_tokenizer(tokenizer, other, model: PathLike, ref: PathLike) -> None:
    """A reference must read the same token ids as the policy."""
    if tokenizer.get_vocab() != other.get_vocab():
        raise LmatlasError(f"the reference model {ref} has another tokenizer than {model} (their vocabularies differ); "
                           "the reference must score the same tokens as the model")


@dataclass(frozen=True)
class Preference:
    model: PathLike
    data: PathLike
    val: PathLike | None = None
    val_fraction: float = 0.1
    max_length: int = 512

    objective: ClassVar[str]

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise FieldError(lambda f: f"{f('val_fraction')} must be between 0 and 1, not {self.val_fraction}")
        if self.max_length < 4:
            raise FieldError(lambda f: f"{f('max_length')} must be at least 4, not {self.max_length}")

    def task(self, config: TrainConfig, ctx: Context) -> tuple[Task, TrainConfig]:
        from ..tokenizer import load_tokenizer

        if config.steps is None:
            raise FieldError(lambda f: f"{f('steps')} must be given")
        tokenizer = load_tokenizer(self.model)
        return self.build(tokenizer, tokenizer_folder(self.model, tokenizer, Path(config.out), ctx), config.seed), config

    def build(self, tokenizer, tokenizer_dir: Path, seed: int) -> Task:
        raise NotImplementedError

    def context(self, model) -> int:
        """Tokens of prompt and reply: ``max_length``, within what the model reads."""
        usable = model.config.usable_positions
        return min(self.max_length, usable) if usable else self.max_length

    def _pairs(self, tokenizer, model):
        from .pairs import read_pairs, split

        train = read_pairs(self.data, tokenizer, self.context(model))
        if self.val:
            return train, read_pairs(self.val, tokenizer, self.context(model))
        return split(train, self.val_fraction)


@dataclass(frozen=True)
class RewardRecipe(Preference):
    """A reward model: ``model`` (a decoder or an encoder) with a one-output sequence-classification
    head learns to score the chosen reply above the rejected one; ``centring``: the coefficient
    of the term that keeps rewards near zero."""

    centring: float | None = None

    objective: ClassVar[str] = "reward"

    def build(self, tokenizer, tokenizer_dir, seed):
        from .finetune import load_for_finetuning, use_pad_token
        from .tasks.preference import RewardTask

        model = load_for_finetuning(self.model, "sequence-classification", {0: "LABEL_0"})
        pad_id = use_pad_token(model, tokenizer) if model.is_decoder else (tokenizer.pad_token_id or 0)
        train, dev = self._pairs(tokenizer, model)
        return RewardTask(model, tokenizer_dir, train, dev, pad_id, seed, self.centring)


@dataclass(frozen=True)
class DPORecipe(Preference):
    """DPO: the policy ``model`` learns the preferences directly, against the frozen ``ref``
    (default: ``model`` itself, as it starts); ``loss``: sigmoid (DPO), ipo or hinge."""

    ref: PathLike | None = None
    beta: float = 0.1
    loss: str = "sigmoid"

    objective: ClassVar[str] = "dpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise FieldError(lambda f: f"{f('beta')} must be positive, not {self.beta}")
        if self.loss not in DPO_LOSSES:
            raise FieldError(lambda f: f"{f('loss')} must be one of {', '.join(DPO_LOSSES)}, not {self.loss!r}")

    def build(self, tokenizer, tokenizer_dir, seed):
        from ..tokenizer import load_tokenizer
        from .tasks.preference import DPOTask

        model = load_language_model(self.model, "the model").train()
        if self.ref is not None:
            check_same_tokenizer(tokenizer, load_tokenizer(self.ref), self.model, self.ref)
        reference = load_language_model(self.ref or self.model, "the reference model")
        pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        train, dev = self._pairs(tokenizer, model)
        return DPOTask(model, tokenizer_dir, train, dev, pad_id, seed, reference, self.beta, self.loss)


@dataclass(frozen=True)
class OnlineRecipe(Preference):
    """Online training of the policy ``model`` on the prompts of ``data`` (a ``prompt`` per JSON
    Lines row; other fields go to a reward function that names them) against ``reward``: a
    reward model (a folder or hub id) or a Python function ``module:function`` (a module
    or a .py file) of ``prompts`` and ``completions`` returning a number each. ``group`` replies
    are sampled per prompt (``max_new_tokens``, ``sample_temperature``); ``beta`` weighs the KL to the
    frozen ``ref`` (default: ``model`` as it starts); ``clip``: PPO's ratio (and value) clipping;
    ``updates``: optimizer steps per rollout; ``gamma``, ``lam``: GAE's; ``value_coef``: the
    weight of PPO's value loss."""

    reward: str = ""
    ref: PathLike | None = None
    beta: float = 0.04
    group: int = 4
    max_new_tokens: int = 32
    sample_temperature: float = 1.0
    clip: float = 0.2
    updates: int = 1
    gamma: float = 1.0
    lam: float = 0.95
    value_coef: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.reward:
            raise FieldError(lambda f: f"{f('reward')} must name a reward model or a module:function")
        if self.group < 2 and self.objective != "ppo":
            raise FieldError(lambda f: f"{f('group')} must be at least 2 for {self.objective}, which compares a "
                                       f"prompt's replies, not {self.group}")
        for name in ("max_new_tokens", "updates", "group"):
            if getattr(self, name) < 1:
                raise FieldError(lambda f, name=name: f"{f(name)} must be at least 1, not {getattr(self, name)}")
        if self.beta < 0 or self.sample_temperature <= 0 or self.clip <= 0:
            raise FieldError(lambda f: f"{f('beta')} must not be negative, {f('sample_temperature')} and {f('clip')} must "
                                       "be positive")

    def build(self, tokenizer, tokenizer_dir, seed):
        from ..tokenizer import load_tokenizer
        from .pairs import read_prompts, split
        from .tasks.online import OnlineTask, Sampling, load_reward

        reward = load_reward(self.reward)
        model = load_language_model(self.model, "the model").train()
        if self.ref is not None:
            check_same_tokenizer(tokenizer, load_tokenizer(self.ref), self.model, self.ref)
        reference = load_language_model(self.ref or self.model, "the reference model")
        prompts = read_prompts(self.data, tokenizer, self.context(model), self.max_new_tokens)
        if self.val:
            dev = read_prompts(self.val, tokenizer, self.context(model), self.max_new_tokens)
        else:
            prompts, dev = split(prompts, self.val_fraction)
        sampling = Sampling(self.group, self.max_new_tokens, self.sample_temperature)
        return OnlineTask(self.objective, model, reference, tokenizer, tokenizer_dir, prompts, dev,
                          reward, seed, sampling, self.beta, self.clip, self.updates, self.gamma, self.lam,
                          self.value_coef)


@dataclass(frozen=True)
class GRPORecipe(OnlineRecipe):
    objective: ClassVar[str] = "grpo"


@dataclass(frozen=True)
class RLOORecipe(OnlineRecipe):
    objective: ClassVar[str] = "rloo"


@dataclass(frozen=True)
class PPORecipe(OnlineRecipe):
    objective: ClassVar[str] = "ppo"


#: Each preference objective's recipe, by name.
PREFERENCE_RECIPES: dict[str, type[Preference]] = {
    r.objective: r for r in (RewardRecipe, DPORecipe, GRPORecipe, RLOORecipe, PPORecipe)}

__all__ = ["PREFERENCE_RECIPES", "DPORecipe", "GRPORecipe", "OnlineRecipe", "PPORecipe", "Preference", "RLOORecipe", "RewardRecipe", "check_same_tokenizer",
           "load_language_model", "tokenizer_folder"]
