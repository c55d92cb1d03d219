"""XLNet's permutation language modelling: random windows of a token stream, each with its own
factorisation order drawn anew at every draw; the query stream predicts the last 1/K of the
order from the tokens before it (``objectives.permutation_lm``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import LmatlasError
from .. import objectives as obj
from ..data import TokenStream, WindowSampler, rank_slice, tiled_offsets, windows
from ..distributed import Context
from .base import EVAL_BATCH, DataPosition, ModelTask, mean_loss


def permutation_loss(module: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The summed loss of the predictions and their number."""
    logits = module(batch["input_ids"], perm_mask=batch["perm_mask"], target_mapping=batch["target_mapping"]).logits
    return obj.token_loss(logits, batch["labels"])


class PermutationLMTask(DataPosition, ModelTask):
    name = "permutation-lm"
    weights = {"loss": 1.0}
    metric = "loss"

    def __init__(self, model, tokenizer_dir, train: TokenStream, val: TokenStream | None, block: int, seed: int,
                 k: int = 6, eval_windows: int | None = None):
        super().__init__(model, tokenizer_dir)
        if model.config.xlnet is None:
            raise LmatlasError(f"permutation language modelling trains an XLNet (its two-stream attention); "
                               f"this model is a {model.config.model_type}")
        self.train_data, self.val, self.block, self.k = train, val, block, k
        self.sampler = WindowSampler(len(train), block, seed)
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.eval_windows = eval_windows

    def next_batch(self, batch_size: int, ctx: Context) -> dict[str, Any]:
        # The global batch's orders are drawn together, then each process takes its rows.
        ids, _ = windows(self.train_data, self.sampler.draw(batch_size * ctx.world), self.block)
        full = obj.permutation_lm(ids, self.k, self.generator)
        batch = {key: rank_slice(value, ctx.rank, ctx.world) for key, value in full.items()}
        batch["counts"] = {"loss": batch["labels"].numel()}
        return batch

    def loss_terms(self, module, batch):
        return {"loss": permutation_loss(module, batch)[0]}

    def evaluate(self, module, ctx):
        if self.val is None:
            return {}
        # The same windows and the same orders at every evaluation.
        generator = torch.Generator().manual_seed(0)
        offsets = tiled_offsets(len(self.val), self.block, at_most=self.eval_windows)
        total, count = 0.0, 0
        for i in range(0, len(offsets), EVAL_BATCH):
            ids, _ = windows(self.val, offsets[i : i + EVAL_BATCH], self.block)
            batch = obj.permutation_lm(ids, self.k, generator)
            s, n = permutation_loss(module, {key: value.to(ctx.device) for key, value in batch.items()})
            total, count = total + float(s), count + n
        return mean_loss(total, count)


__all__ = ["PermutationLMTask", "permutation_loss"]
