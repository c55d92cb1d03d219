"""DistilBERT's knowledge distillation: a student (the teacher's every other layer) learns the
teacher's softened predictions, the masked tokens and the direction of its last hidden states."""

from __future__ import annotations

import torch

from ...model import LmatlasModel
from .. import objectives as obj
from ..data import TokenStream
from .base import ModelTask
from .masked import MaskedData, MaskedWindows


class DistillationTask(MaskedData, ModelTask):
    name = "distillation"
    # DistilBERT's weights (alpha_ce, alpha_mlm, alpha_cos) and temperature.
    weights = {"kl": 5.0, "mlm": 2.0, "cos": 1.0}
    metric = "mlm"

    def __init__(self, student: LmatlasModel, teacher: LmatlasModel, tokenizer, tokenizer_dir,
                 train: TokenStream, val: TokenStream | None, block: int, seed: int, temperature: float = 2.0,
                 probability: float = 0.15, whole_word: bool = False, eval_windows: int | None = None):
        super().__init__(student, tokenizer_dir)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = temperature
        self.data = MaskedWindows(tokenizer, train, block, seed, probability, whole_word, student.config.vocab_size)
        self.val, self.eval_windows = val, eval_windows

    def next_batch(self, batch_size, ctx):
        batch = self.draw(batch_size, ctx)
        n = batch["input_ids"].numel()
        batch["counts"] = {"kl": n, "mlm": int((batch["labels"] != obj.IGNORE).sum()), "cos": n}
        return batch

    def _terms(self, module, batch):
        self.teacher.to(batch["input_ids"].device)
        with torch.no_grad():
            t = self.teacher(batch["input_ids"], output_hidden_states=True)
        s = module(batch["input_ids"], output_hidden_states=True)
        kl, _ = obj.distillation_loss(s["logits"], t["logits"], self.temperature)
        mlm, _ = obj.masked_lm_loss(s["logits"], batch["labels"])
        cos, _ = obj.cosine_loss(s["hidden_states"][-1], t["hidden_states"][-1])
        return {"kl": kl, "mlm": mlm, "cos": cos}

    def loss_terms(self, module, batch):
        return self._terms(module, batch)

    def evaluate(self, module, ctx):
        if self.val is None:
            return {}
        sums = {"kl": 0.0, "mlm": 0.0, "cos": 0.0}
        counts = {"kl": 0, "mlm": 0, "cos": 0}
        for batch in self.data.fixed(self.val, self.eval_windows):
            batch = {k: v.to(ctx.device) for k, v in batch.items()}
            terms = self._terms(module, batch)
            n = batch["input_ids"].numel()
            for k, c in (("kl", n), ("mlm", int((batch["labels"] != obj.IGNORE).sum())), ("cos", n)):
                sums[k] += float(terms[k])
                counts[k] += c
        return {k: sums[k] / max(counts[k], 1) for k in sums}

    def signature(self):
        return {**super().signature(), "temperature": self.temperature}

__all__ = ["DistillationTask"]
