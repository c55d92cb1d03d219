"""GPT's causal language modelling and Alpaca's instruction tuning: a decoder predicting each
next token, of a token stream or of the responses to instructions."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from .. import objectives as obj
from ..data import EpochSampler, TokenStream, WindowSampler, rank_slice, tiled_offsets, windows
from ...errors import LmatlasError
from ..distributed import Context
from ..fields import FieldError
from .base import EVAL_BATCH, DataPosition, ModelTask, mean_loss


def causal_loss(module: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """A causal-LM batch's token loss and count (the batch's attention mask, when it has one)."""
    logits = module(batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
    return obj.token_loss(logits, batch["labels"])


def causal_eval(module: nn.Module, batches: Iterable[dict[str, torch.Tensor]], ctx: Context) -> dict[str, float]:
    """``mean_loss`` over every token of ``batches``, each counted once."""
    total, count = 0.0, 0
    for batch in batches:
        s, n = causal_loss(module, {k: v.to(ctx.device) for k, v in batch.items()})
        total, count = total + float(s), count + n
    return mean_loss(total, count)


class CausalLMTask(DataPosition, ModelTask):
    """Random windows of ``block + 1`` tokens; each predicts its last ``block`` tokens."""

    name = "causal-lm"
    weights = {"loss": 1.0}
    metric = "loss"

    def __init__(self, model, tokenizer_dir, train: TokenStream, val: TokenStream | None, block: int, seed: int,
                 eval_windows: int | None = None):
        super().__init__(model, tokenizer_dir)
        self.train_data, self.val, self.block = train, val, block
        self.sampler = WindowSampler(len(train), block + 1, seed)
        self.eval_windows = eval_windows

    def next_batch(self, batch_size: int, ctx: Context) -> dict[str, Any]:
        offsets = rank_slice(self.sampler.draw(batch_size * ctx.world), ctx.rank, ctx.world)
        ids, _ = windows(self.train_data, offsets, self.block + 1)
        batch = obj.causal_lm(ids)
        batch["counts"] = {"loss": batch["labels"].numel()}
        return batch

    def loss_terms(self, module, batch):
        return {"loss": causal_loss(module, batch)[0]}

    def evaluate(self, module, ctx):
        if self.val is None:
            return {}
        # Every validation token predicted once, from windows laid end to end.
        offsets = tiled_offsets(len(self.val), self.block + 1, stride=self.block, at_most=self.eval_windows)
        batches = (obj.causal_lm(windows(self.val, offsets[i : i + EVAL_BATCH], self.block + 1)[0])
                   for i in range(0, len(offsets), EVAL_BATCH))
        return causal_eval(module, batches, ctx)


def instruction_examples(tokenizer, rows: list[dict[str, Any]], max_length: int, source: str,
                         columns: tuple[str, str, str] = ("instruction", "input", "output")):
    """(ids, labels) of Alpaca-style rows: instruction, optional input, output."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise LmatlasError(f"the tokenizer {tokenizer.name_or_path} has no end-of-sequence token, which instruction "
                           "tuning appends to each response")
    inst, inp, out = columns
    examples = []
    for n, row in enumerate(rows, 1):
        if inst not in row or out not in row:
            raise LmatlasError(f"{source}, row {n}: needs {inst!r} and {out!r} fields (and optionally {inp!r})")
        prompt = obj.alpaca_prompt(str(row[inst]), str(row.get(inp) or ""))
        prompt_ids = tokenizer(prompt)["input_ids"]
        response_ids = tokenizer(str(row[out]), add_special_tokens=False)["input_ids"] + [eos]
        ids, labels = obj.instruction_example(prompt_ids, response_ids, max_length + 1)
        if all(label == obj.IGNORE for label in labels[1:]):
            continue  # the prompt alone fills the block: nothing to learn
        examples.append((ids, labels))
    if not examples:
        raise FieldError(lambda f: f"{source}: no example has room for its response within {f('block')} {max_length}")
    return examples


def pad_examples(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and shifted labels (IGNORE on the padding)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), obj.IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    batch = obj.causal_lm(ids, labels)
    batch["attention_mask"] = mask[:, :-1]
    return batch


class InstructionTask(DataPosition, ModelTask):
    name = "instruction"
    weights = {"loss": 1.0}
    metric = "loss"

    def __init__(self, model, tokenizer, tokenizer_dir, train, dev, seed: int):
        super().__init__(model, tokenizer_dir)
        self.train_examples, self.dev_examples = train, dev
        self.pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        self.sampler = EpochSampler(len(train), seed)

    def next_batch(self, batch_size, ctx):
        index = rank_slice(self.sampler.draw(batch_size * ctx.world), ctx.rank, ctx.world)
        batch = pad_examples([self.train_examples[i] for i in index], self.pad_id)
        batch["counts"] = {"loss": int((batch["labels"] != obj.IGNORE).sum())}
        return batch

    def loss_terms(self, module, batch):
        return {"loss": causal_loss(module, batch)[0]}

    def evaluate(self, module, ctx):
        if not self.dev_examples:
            return {}
        batches = (pad_examples(self.dev_examples[i : i + 16], self.pad_id)
                   for i in range(0, len(self.dev_examples), 16))
        return causal_eval(module, batches, ctx)

__all__ = ["CausalLMTask", "InstructionTask", "causal_eval", "causal_loss", "instruction_examples", "pad_examples"]
