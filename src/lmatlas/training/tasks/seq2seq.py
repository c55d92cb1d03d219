"""T5's span corruption and BART's denoising: an encoder-decoder restores a corrupted text.
Also the (source, target) batches and loss that sequence-to-sequence fine-tuning shares."""

from __future__ import annotations

import torch

from ...errors import LmatlasError
from .. import objectives as obj
from ..data import TokenStream, WindowSampler, tiled_offsets, windows
from .base import EVAL_BATCH, DataPosition, ModelTask, mean_loss, slice_batch


def shift_right(labels: torch.Tensor, start: int, pad: int) -> torch.Tensor:
    """The decoder's inputs: the target one step late, after the decoder start token."""
    out = torch.full_like(labels, pad)
    out[:, 0] = start
    out[:, 1:] = labels[:, :-1]
    return out.masked_fill(out == obj.IGNORE, pad)


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def seq2seq_batch(sources: list[list[int]], targets: list[list[int]], pad: int, start: int) -> dict[str, torch.Tensor]:
    inputs = pad_rows(sources, pad)
    mask = pad_rows([[1] * len(r) for r in sources], 0)
    labels = pad_rows(targets, obj.IGNORE)
    return {"input_ids": inputs, "attention_mask": mask, "labels": labels,
            "decoder_input_ids": shift_right(labels, start, pad)}


def seq2seq_loss(module, batch) -> torch.Tensor:
    logits = module(batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=batch["decoder_input_ids"]).logits
    return obj.token_loss(logits, batch["labels"])[0]


def sentence_ends(tokenizer) -> set[int]:
    """Ids of the tokens that end a sentence (a full stop, question or exclamation mark)."""
    return {i for t, i in tokenizer.get_vocab().items() if t.strip("Ġ▁# ").endswith((".", "!", "?"))}


class DenoisingTask(DataPosition, ModelTask):
    """Windows of the stream corrupted and restored: T5's span corruption (``span-corruption``)
    or BART's sentence permutation and text infilling (``denoising``)."""

    weights = {"loss": 1.0}
    metric = "loss"

    def __init__(self, kind: str, model, tokenizer, tokenizer_dir, train: TokenStream, val: TokenStream | None,
                 block: int, seed: int, eval_windows: int | None = None, noise: float | None = None,
                 span_length: float = 3.0, permute: bool = True):
        super().__init__(model, tokenizer_dir)
        self.name = kind
        self.train_data, self.val, self.block, self.eval_windows = train, val, block, eval_windows
        self.pad = tokenizer.pad_token_id
        if self.pad is None:
            raise LmatlasError(f"the tokenizer {tokenizer.name_or_path} has no padding token, which {kind} needs")
        self.start = model.config.decoder_start_token_id
        self.eos, self.bos = tokenizer.eos_token_id, tokenizer.bos_token_id
        self.span_length, self.permute = span_length, permute
        if kind == "span-corruption":
            vocab = tokenizer.get_vocab()
            self.sentinels = [vocab[f"<extra_id_{i}>"] for i in range(1000) if f"<extra_id_{i}>" in vocab]
            self.noise = 0.15 if noise is None else noise
            spans = max(round(round(block * self.noise) / span_length), 1)
            if len(self.sentinels) < spans:
                raise LmatlasError(f"the tokenizer {tokenizer.name_or_path} has {len(self.sentinels)} sentinel tokens "
                                   f"(<extra_id_0>, ...), but a block of {block} makes {spans} noise spans")
        else:
            self.mask = tokenizer.mask_token_id
            if self.mask is None:
                raise LmatlasError(f"the tokenizer {tokenizer.name_or_path} has no mask token, which BART's text "
                                   "infilling needs")
            self.noise = 0.3 if noise is None else noise
            self.ends = sentence_ends(tokenizer)
        self.sampler = WindowSampler(len(train), block, seed)
        self.generator = torch.Generator().manual_seed(seed + 1)
        # Switch Transformer: the router's z-loss and load-balancing loss join the objective,
        # at the coefficients of its config (both 0.001 in the paper's runs).
        cfg = model.config
        self.routed = cfg.num_experts > 0
        if self.routed:
            self.weights = {"loss": 1.0, "router_z_loss": cfg.router_z_loss_coef,
                            "router_aux_loss": cfg.router_aux_loss_coef}

    def corrupt(self, ids: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        sources, targets = [], []
        for row in ids:
            if self.name == "span-corruption":
                src, tgt = obj.span_corruption(row, self.sentinels, self.eos, self.noise, self.span_length, generator)
                sources.append(src.tolist())
                targets.append(tgt.tolist())
            else:
                doc = row.tolist()
                shuffled = obj.sentence_permutation(obj.split_sentences(doc, self.ends), generator) if self.permute else doc
                noised, _ = obj.text_infilling(torch.tensor(shuffled), self.mask, self.noise, self.span_length, generator)
                frame = ([self.bos] if self.bos is not None else []), ([self.eos] if self.eos is not None else [])
                sources.append(frame[0] + noised.tolist() + frame[1])
                targets.append(frame[0] + doc + frame[1])
        return seq2seq_batch(sources, targets, self.pad, self.start)

    def next_batch(self, batch_size, ctx):
        ids, _ = windows(self.train_data, self.sampler.draw(batch_size * ctx.world), self.block)
        batch = slice_batch(self.corrupt(ids, self.generator), ctx)
        batch["counts"] = {"loss": int((batch["labels"] != obj.IGNORE).sum()), "router_z_loss": 1,
                           "router_aux_loss": 1}
        return batch

    def loss_terms(self, module, batch):
        terms = {"loss": seq2seq_loss(module, batch)}
        if self.routed:
            from ...moe import router_losses, sparse_stacks

            z, aux = router_losses(sparse_stacks(getattr(module, "module", module)))
            terms.update(router_z_loss=z, router_aux_loss=aux)
        return terms

    def evaluate(self, module, ctx):
        if self.val is None:
            return {}
        offsets = tiled_offsets(len(self.val), self.block, at_most=self.eval_windows)
        gen = torch.Generator().manual_seed(0)
        total, count = 0.0, 0
        for i in range(0, len(offsets), EVAL_BATCH):
            ids, _ = windows(self.val, offsets[i : i + EVAL_BATCH], self.block)
            batch = {k: v.to(ctx.device) for k, v in self.corrupt(ids, gen).items()}
            total += float(seq2seq_loss(module, batch))
            count += int((batch["labels"] != obj.IGNORE).sum())
        return mean_loss(total, count)


__all__ = ["DenoisingTask", "pad_rows", "sentence_ends", "seq2seq_batch", "seq2seq_loss", "shift_right"]
