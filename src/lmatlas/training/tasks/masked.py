"""BERT's and RoBERTa's masked language modelling, and ELECTRA's replaced token detection (a
small masked-LM generator whose samples a discriminator tells from the original tokens)."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import LmatlasError
from ...model import LmatlasModel
from .. import objectives as obj
from ..data import TokenStream, WindowSampler, tiled_offsets, windows
from ..distributed import Context
from ..fields import FieldError
from ..trainer import Task
from .base import EVAL_BATCH, DataPosition, ModelTask, load_weights, mean_loss, model_signature, slice_batch


class MaskedWindows(DataPosition):
    """Random windows of a stream framed as [CLS] ... [SEP] (or <s> ... </s>) and masked anew
    each time (dynamic masking): the global batch is drawn and masked, then sliced per rank."""

    def __init__(self, tokenizer, stream: TokenStream, block: int, seed: int, probability: float,
                 whole_word: bool, vocab_size: int):
        mask = tokenizer.mask_token_id
        if mask is None:
            raise LmatlasError(f"the tokenizer {tokenizer.name_or_path} has no mask token, which masked "
                               "language modelling needs; train one with a [MASK] or <mask> special token")
        first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.frame = (first, last) if first is not None and last is not None else None
        self.inner = block - (2 if self.frame else 0)
        if self.inner < 1:
            raise FieldError(lambda f: f"{f('block')} {block} leaves no room for text between the special tokens")
        self.stream, self.block, self.mask_id, self.vocab_size = stream, block, mask, vocab_size
        self.probability, self.whole_word = probability, whole_word
        self.special_ids = set(tokenizer.all_special_ids)
        self.sampler = WindowSampler(len(stream), self.inner, seed)
        self.generator = torch.Generator().manual_seed(seed + 1)

    def frame_ids(self, ids: torch.Tensor, starts: torch.Tensor):
        if self.frame is None:
            return ids, starts
        b = ids.shape[0]
        first = torch.full((b, 1), self.frame[0], dtype=ids.dtype)
        last = torch.full((b, 1), self.frame[1], dtype=ids.dtype)
        ones = torch.ones((b, 1), dtype=torch.bool)
        return torch.cat([first, ids, last], 1), torch.cat([ones, starts, ones], 1)

    def special_mask(self, ids: torch.Tensor) -> torch.Tensor:
        special = torch.zeros_like(ids, dtype=torch.bool)
        for s in self.special_ids:
            special |= ids == s
        return special

    def mask(self, ids, starts, generator):
        return obj.mask_tokens(
            ids, mask_token_id=self.mask_id, vocab_size=self.vocab_size, special_mask=self.special_mask(ids),
            word_starts=starts if self.whole_word else None, probability=self.probability, generator=generator,
        )

    def draw(self, n: int) -> dict[str, torch.Tensor]:
        ids, starts = self.frame_ids(*windows(self.stream, self.sampler.draw(n), self.inner))
        inputs, labels = self.mask(ids, starts, self.generator)
        return {"input_ids": inputs, "labels": labels, "original": ids}

    def fixed(self, stream: TokenStream, max_windows: int | None, seed: int = 0):
        """Evaluation batches: windows laid end to end, masked the same way every time."""
        offsets = tiled_offsets(len(stream), self.inner, at_most=max_windows)
        gen = torch.Generator().manual_seed(seed)
        for i in range(0, len(offsets), EVAL_BATCH):
            ids, starts = self.frame_ids(*windows(stream, offsets[i : i + EVAL_BATCH], self.inner))
            inputs, labels = self.mask(ids, starts, gen)
            yield {"input_ids": inputs, "labels": labels, "original": ids}


class MaskedData:
    """A task drawing masked windows from ``self.data`` (a ``MaskedWindows``), whose position
    is the task's."""

    data: MaskedWindows

    def draw(self, batch_size: int, ctx: Context) -> dict[str, torch.Tensor]:
        """This process's share of a global batch of masked windows."""
        batch = slice_batch(self.data.draw(batch_size * ctx.world), ctx)
        del batch["original"]
        return batch

    def state_dict(self):
        return self.data.state_dict()

    def load_state_dict(self, state):
        self.data.load_state_dict(state)


class MaskedLMTask(MaskedData, ModelTask):
    name = "masked-lm"
    weights = {"loss": 1.0}
    metric = "loss"

    def __init__(self, model, tokenizer, tokenizer_dir, train: TokenStream, val: TokenStream | None, block: int,
                 seed: int, probability: float = 0.15, whole_word: bool = False, eval_windows: int | None = None):
        super().__init__(model, tokenizer_dir)
        self.data = MaskedWindows(tokenizer, train, block, seed, probability, whole_word, model.config.vocab_size)
        self.val, self.eval_windows = val, eval_windows

    def next_batch(self, batch_size, ctx):
        batch = self.draw(batch_size, ctx)
        batch["counts"] = {"loss": int((batch["labels"] != obj.IGNORE).sum())}
        return batch

    def loss_terms(self, module, batch):
        logits = module(batch["input_ids"]).logits
        return {"loss": obj.masked_lm_loss(logits, batch["labels"])[0]}

    def evaluate(self, module, ctx):
        if self.val is None:
            return {}
        total, correct, count = 0.0, 0, 0
        for batch in self.data.fixed(self.val, self.eval_windows):
            logits = module(batch["input_ids"].to(ctx.device)).logits
            labels = batch["labels"].to(ctx.device)
            s, n = obj.masked_lm_loss(logits, labels)
            keep = labels != obj.IGNORE
            correct += int((logits.argmax(-1)[keep] == labels[keep]).sum())
            total, count = total + float(s), count + n
        return mean_loss(total, count) | {"accuracy": correct / max(count, 1)}


class ElectraPair(nn.Module):
    """A generator (masked LM) and a discriminator (replaced-token detection) that share their
    embeddings (token, position, type; and the norm), as in ELECTRA; the forward pass runs
    both and returns the loss terms."""

    def __init__(self, generator: LmatlasModel, discriminator: LmatlasModel):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.share_embeddings()

    def share_embeddings(self) -> None:
        g, d = self.generator.backbone.embeddings, self.discriminator.backbone.embeddings
        for name in ("tokens", "positions", "token_types", "norm"):
            if getattr(d, name, None) is not None:
                setattr(g, name, getattr(d, name))
        self.generator.tie_weights()

    def forward(self, input_ids, labels, attention_mask=None):
        gen_logits = self.generator(input_ids, attention_mask=attention_mask).logits
        mlm, _ = obj.masked_lm_loss(gen_logits, labels)
        fake, replaced = obj.replace_tokens(input_ids, labels, gen_logits)
        disc_logits = self.discriminator(fake, attention_mask=attention_mask).logits
        rtd, _ = obj.replaced_token_detection_loss(disc_logits, replaced, attention_mask)
        return {"mlm": mlm, "rtd": rtd, "disc_logits": disc_logits.detach(), "replaced": replaced}


def electra_generator_config(cfg, fraction: float = 0.25):
    """The generator's shape: the discriminator's depth at a fraction of its width (ELECTRA
    found a quarter to a third works best), embedding at the discriminator's embedding width."""
    heads = max(1, round(cfg.num_heads * fraction))
    head_dim = cfg.head_dim
    hidden = heads * head_dim
    return cfg.replace(hidden_size=hidden, num_heads=heads, num_kv_heads=heads,
                       intermediate_size=max(1, round(cfg.intermediate_size * hidden / cfg.hidden_size)),
                       embedding_size=cfg.embedding_size,
                       embedding_projection=cfg.embedding_size != hidden, pooler_activation=None)


class ElectraTask(MaskedData, Task):
    name = "replaced-token-detection"
    # ELECTRA's loss: MLM of the generator + 50 x the discriminator's binary cross-entropy.
    weights = {"mlm": 1.0, "rtd": 50.0}
    metric = "rtd"

    def __init__(self, discriminator: LmatlasModel, generator: LmatlasModel, tokenizer, tokenizer_dir,
                 train: TokenStream, val: TokenStream | None, block: int, seed: int, probability: float = 0.15,
                 whole_word: bool = False, eval_windows: int | None = None):
        self.module = ElectraPair(generator, discriminator)
        self.tokenizer_dir = tokenizer_dir
        self.data = MaskedWindows(tokenizer, train, block, seed, probability, whole_word,
                                  discriminator.config.vocab_size)
        self.val, self.eval_windows = val, eval_windows

    def next_batch(self, batch_size, ctx):
        batch = self.draw(batch_size, ctx)
        batch["counts"] = {"mlm": int((batch["labels"] != obj.IGNORE).sum()), "rtd": batch["input_ids"].numel()}
        return batch

    def loss_terms(self, module, batch):
        out = module(batch["input_ids"], batch["labels"])
        return {"mlm": out["mlm"], "rtd": out["rtd"]}

    def evaluate(self, module, ctx):
        if self.val is None:
            return {}
        sums = {"mlm": 0.0, "rtd": 0.0}
        masked = tokens = correct = 0
        gen = torch.random.fork_rng()  # the generator's samples must not move the training RNG
        with gen:
            torch.manual_seed(0)
            for batch in self.data.fixed(self.val, self.eval_windows):
                labels = batch["labels"].to(ctx.device)
                out = module(batch["input_ids"].to(ctx.device), labels)
                sums["mlm"] += float(out["mlm"])
                sums["rtd"] += float(out["rtd"])
                masked += int((labels != obj.IGNORE).sum())
                tokens += labels.numel()
                correct += int(((out["disc_logits"] > 0).float() == out["replaced"]).sum())
        return {"mlm": sums["mlm"] / max(masked, 1), "rtd": sums["rtd"] / max(tokens, 1),
                "rtd_accuracy": correct / max(tokens, 1)}

    def save(self, module, folder):
        """The discriminator (the model to fine-tune) in ``folder``, the generator in
        ``folder/generator``."""
        from ...save import save_model

        save_model(module.discriminator, folder, self.tokenizer_dir)
        save_model(module.generator, folder / "generator", self.tokenizer_dir)

    def load(self, folder):
        load_weights(self.module.discriminator, folder)
        load_weights(self.module.generator, folder / "generator")
        self.module.share_embeddings()

    def signature(self):
        return {"discriminator": model_signature(self.module.discriminator),
                "generator": model_signature(self.module.generator)}

__all__ = ["ElectraPair", "ElectraTask", "MaskedLMTask", "MaskedWindows", "electra_generator_config"]
