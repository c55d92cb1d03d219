"""Learning from preference pairs: a reward model (InstructGPT's second step) and DPO.

Both draw pairs in shuffled epochs and put a batch's chosen sequences before its rejected ones
in one padded batch. Besides the loss they log, per pair, what TRL logs: the reward model's
accuracy and margin; DPO's implicit rewards of the chosen and rejected replies, accuracy and
margin. Those are loss terms of weight 0 (the trainer averages and logs each term).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import alignment as A
from ..data import EpochSampler, rank_slice
from ..distributed import Context
from ..finetune import pad
from ..pairs import Pair
from .base import DataPosition, ModelTask

EVAL_PAIRS = 16


def pair_batch(pairs: list[Pair], pad_id: int) -> dict[str, Any]:
    """Chosen then rejected sequences (prompt + reply), right-padded, with ``reply_mask`` (1 on
    the reply's tokens) and the pairs' margins."""
    rows = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    batch = pad([{"input_ids": ids} for ids in rows], pad_id)
    reply = torch.zeros_like(batch["input_ids"])
    for i, p in enumerate(pairs + pairs):
        n = len(p.chosen if i < len(pairs) else p.rejected)
        reply[i, len(p.prompt) : len(p.prompt) + n] = 1
    batch["reply_mask"] = reply
    batch["margin"] = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    return batch


def sequence_logps(module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each row's reply, its number of tokens)."""
    logits = module(batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    mask = batch["reply_mask"][:, 1:].to(torch.float32)
    logps = A.token_logps(logits, batch["input_ids"][:, 1:])
    return (logps * mask).sum(-1), mask.sum(-1)


class PairTask(DataPosition, ModelTask):
    """Pairs drawn in shuffled epochs; the dev pairs averaged over every term."""

    terms: tuple[str, ...]

    def __init__(self, model, tokenizer_dir, train: list[Pair], dev: list[Pair], pad_id: int, seed: int):
        super().__init__(model, tokenizer_dir)
        self.train_pairs, self.dev_pairs, self.pad_id = train, dev, pad_id
        self.weights = {"loss": 1.0, **{t: 0.0 for t in self.terms}}
        self.sampler = EpochSampler(len(train), seed)

    def _batch(self, index: list[int], pairs: list[Pair]) -> dict[str, Any]:
        batch = pair_batch([pairs[i] for i in index], self.pad_id)
        batch["index"] = torch.tensor(index)
        batch["counts"] = {name: len(index) for name in self.weights}
        return batch

    def next_batch(self, batch_size: int, ctx: Context) -> dict[str, Any]:
        index = rank_slice(self.sampler.draw(batch_size * ctx.world), ctx.rank, ctx.world)
        return self._batch(index, self.train_pairs)

    def evaluate(self, module, ctx):
        if not self.dev_pairs:
            return {}
        sums: dict[str, float] = {}
        for start in range(0, len(self.dev_pairs), EVAL_PAIRS):
            index = list(range(start, min(start + EVAL_PAIRS, len(self.dev_pairs))))
            batch = {k: v.to(ctx.device) if isinstance(v, torch.Tensor) else v
                     for k, v in self._batch(index, self.dev_pairs).items()}
            for name, value in self.loss_terms(module, batch, dev=True).items():
                sums[name] = sums.get(name, 0.0) + float(value)
        return {name: total / len(self.dev_pairs) for name, total in sums.items()}

    def loss_terms(self, module, batch, dev: bool = False):
        raise NotImplementedError


class RewardTask(PairTask):
    """A one-output sequence classifier scoring prompt + reply; the chosen reply should score
    higher."""

    name = "reward"
    metric = "accuracy"
    terms = ("accuracy", "margin")

    def __init__(self, model, tokenizer_dir, train, dev, pad_id, seed, centring: float | None = None):
        super().__init__(model, tokenizer_dir, train, dev, pad_id, seed)
        self.centring = centring

    def loss_terms(self, module, batch, dev=False):
        scores = module(batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float().squeeze(-1)
        chosen, rejected = scores.chunk(2)
        margin = batch["margin"] if batch["margin"].any() else None
        loss = A.reward_pair_loss(chosen, rejected, margin, self.centring)
        diff = (chosen - rejected).detach()
        return {"loss": loss.sum(), "accuracy": (diff > 0).float().sum(), "margin": diff.sum()}


class DPOTask(PairTask):
    """DPO against a frozen reference whose log-probabilities of every reply are computed once,
    when the task is made (``ref_logps``: chosen and rejected, train and dev)."""

    name = "dpo"
    metric = "loss"
    terms = ("chosen_reward", "rejected_reward", "accuracy", "margin")

    def __init__(self, model, tokenizer_dir, train, dev, pad_id, seed, reference, beta: float, loss: str):
        super().__init__(model, tokenizer_dir, train, dev, pad_id, seed)
        self.beta, self.loss = beta, loss
        self.ref_logps = {"train": self._reference(reference, train), "dev": self._reference(reference, dev)}

    @torch.no_grad()
    def _reference(self, reference, pairs: list[Pair]) -> torch.Tensor:
        """(pairs, 2): each reply's summed log-probability under the reference."""
        reference.eval()
        out = []
        for start in range(0, len(pairs), EVAL_PAIRS):
            chunk = pairs[start : start + EVAL_PAIRS]
            logps, _ = sequence_logps(reference, pair_batch(chunk, self.pad_id))
            out.append(torch.stack(logps.chunk(2), dim=1))
        return torch.cat(out) if out else torch.zeros(0, 2)

    def loss_terms(self, module, batch, dev=False):
        logps, tokens = sequence_logps(module, batch)
        ref = self.ref_logps["dev" if dev else "train"][batch["index"].cpu()].to(logps.device)
        chosen, rejected = logps.chunk(2)
        chosen_tokens, rejected_tokens = tokens.chunk(2)
        loss, chosen_reward, rejected_reward = A.dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], self.beta,
                                                          self.loss, chosen_tokens, rejected_tokens)
        margin = chosen_reward - rejected_reward
        return {"loss": loss.sum(), "chosen_reward": chosen_reward.sum(), "rejected_reward": rejected_reward.sum(),
                "accuracy": (margin > 0).float().sum(), "margin": margin.sum()}

    def signature(self):
        return {**super().signature(), "beta": self.beta, "loss": self.loss}


__all__ = ["DPOTask", "PairTask", "RewardTask", "pair_batch", "sequence_logps"]
