"""Transformer-XL's training (Dai et al., 2019): causal language modelling over consecutive
segments, each continuing the memory its row's previous segment left.

The stream is cut into as many equal parts as a global batch has rows, and each row reads its
part from the start, ``block`` tokens a step: row r of step k holds the segment right after row
r of step k - 1. The memory a segment returns (detached: the gradient stays inside a segment
while the context reaches back across many) is handed to the next one. When the parts run out
every row starts over, with an empty memory. Evaluation reads the validation stream the same
way, every token predicted once, with the memory carried: the loss Transformer-XL is measured by.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import objectives as obj
from ..data import TokenStream, rank_slice, windows
from ..distributed import Context
from ..fields import FieldError
from .base import DataPosition, ModelTask, mean_loss

EVAL_ROWS = 8  # validation streams read side by side


class SegmentSampler:
    """The offsets of each step's segments: ``rows`` parts of a stream of ``num_tokens``, each
    read ``length`` tokens at a time (one more for the labels); ``fresh`` when they start over."""

    def __init__(self, num_tokens: int, length: int):
        self.num_tokens, self.length = num_tokens, length
        self.rows: int | None = None
        self.position = 0  # in every part
        self.epoch = 0

    def part(self, rows: int) -> int:
        """The tokens of each row's part (the remainder of the stream is not read)."""
        part = self.num_tokens // rows
        if part < self.length + 1:
            n = self.num_tokens
            raise FieldError(lambda f: f"the data has {n} tokens: too few for {rows} rows of segments of {f('block')} "
                                       f"{self.length} (and the next token); give more text, a smaller {f('block')} "
                                       f"or {f('batch_size')}")
        return part

    def draw(self, rows: int) -> tuple[torch.Tensor, bool]:
        """(rows,) offsets of this step's segments, and whether the rows start afresh."""
        part = self.part(rows)
        if rows != self.rows:
            self.rows, self.position = rows, 0
        if self.position + self.length + 1 > part:
            self.position, self.epoch = 0, self.epoch + 1
        fresh = self.position == 0
        offsets = torch.arange(rows) * part + self.position
        self.position += self.length
        return offsets, fresh

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "position": self.position, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.position, self.epoch = state["rows"], int(state["position"]), int(state["epoch"])


def segment_loss(module, input_ids: torch.Tensor, labels: torch.Tensor, mems) -> tuple[torch.Tensor, list | None]:
    """The summed token loss of one segment after ``mems``, and the memory it leaves. The model's
    log-probabilities are its logits (a log-softmax leaves them as they are)."""
    out = module(input_ids, mems=mems)
    return obj.token_loss(out.logits, labels)[0], out.mems


class SegmentLMTask(DataPosition, ModelTask):
    """Consecutive segments of ``block`` tokens per row, the memory carried from step to step."""

    name = "segment-lm"
    weights = {"loss": 1.0}
    metric = "loss"

    def __init__(self, model, tokenizer_dir, train: TokenStream, val: TokenStream | None, block: int,
                 eval_windows: int | None = None):
        super().__init__(model, tokenizer_dir)
        self.train_data, self.val, self.block, self.eval_windows = train, val, block, eval_windows
        self.sampler = SegmentSampler(len(train), block)
        self.mems: list[torch.Tensor] | None = None  # this process's rows' memory
        self.world = 1

    def next_batch(self, batch_size: int, ctx: Context) -> dict[str, Any]:
        self.world = ctx.world
        offsets, fresh = self.sampler.draw(batch_size * ctx.world)
        ids, _ = windows(self.train_data, rank_slice(offsets, ctx.rank, ctx.world), self.block + 1)
        batch = obj.causal_lm(ids)
        batch["fresh"] = fresh
        batch["counts"] = {"loss": batch["labels"].numel()}
        return batch

    def loss_terms(self, module, batch):
        # Batches arrive in order (the accumulation steps of one update too): each continues the last.
        loss, self.mems = segment_loss(module, batch["input_ids"], batch["labels"], None if batch["fresh"] else self.mems)
        return {"loss": loss}

    def evaluate(self, module, ctx):
        if self.val is None:
            return {}
        rows = max(1, min(EVAL_ROWS, (len(self.val) - 1) // (self.block + 1)))
        sampler = SegmentSampler(len(self.val), self.block)
        steps = (sampler.part(rows) - 1) // self.block
        if self.eval_windows:
            steps = min(steps, max(1, self.eval_windows // rows))
        total, count, mems = 0.0, 0, None
        for _ in range(steps):
            offsets, _ = sampler.draw(rows)
            batch = obj.causal_lm(windows(self.val, offsets, self.block + 1)[0].to(ctx.device))
            loss, mems = segment_loss(module, batch["input_ids"], batch["labels"], mems)
            total, count = total + float(loss), count + batch["labels"].numel()
        return mean_loss(total, count)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # One process holds every row's memory; under torchrun each holds its own, and a resumed
        # run starts the memory afresh (the data position is kept).
        if self.world == 1 and self.mems is not None:
            state["mems"] = [m.detach().cpu() for m in self.mems]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.mems = state.get("mems")
        if self.mems is not None:
            device = next(self.module.parameters()).device
            self.mems = [m.to(device) for m in self.mems]


__all__ = ["SegmentLMTask", "SegmentSampler", "segment_loss"]
