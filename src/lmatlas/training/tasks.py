"""Pretraining tasks: each paper's objective bound to a model and a token stream.

A task draws batches (through a sampler whose state a checkpoint keeps), computes its loss
terms with the functions of ``objectives``, evaluates on held-out data and saves its model(s)
in the Hugging Face format.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..errors import LmatlasError
from ..model import LmatlasModel
from . import objectives as obj
from .data import EpochSampler, TokenStream, WindowSampler, rank_slice, tiled_offsets, windows
from .distributed import Context
from .trainer import Task

EVAL_BATCH = 64


# ---------------------------------------------------------------------------------------------
# Models: a preset at any size, or a checkpoint folder
# ---------------------------------------------------------------------------------------------


def _positions_needed(cfg, block: int) -> int:
    """max_positions that lets the model read ``block`` tokens (RoBERTa and OPT skip a few)."""
    if cfg.positions_from_padding:
        return block + (cfg.pad_token_id or 0) + 1
    return block + cfg.position_offset


def build_model(
    spec: str,
    head: str,
    tokenizer,
    block: int,
    overrides: dict[str, Any] | None = None,
    causal: bool | None = None,
) -> LmatlasModel:
    """A model to train: ``spec`` is a checkpoint folder (or hub id) to continue from, or an
    architecture preset (``lmatlas catalog --architectures``) built from scratch at the size
    ``overrides`` give (num_layers, num_heads, hidden_size, ...), with the tokenizer's
    vocabulary and special tokens."""
    from ..catalog import architecture_names, architecture_preset
    from ..loader import load

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    vocab = len(tokenizer)
    if Path(spec).expanduser().is_dir() or ("/" in spec and spec not in architecture_names()):
        if overrides:
            raise LmatlasError(f"size options ({', '.join(overrides)}) only apply to an architecture preset, "
                               f"not to the checkpoint {spec}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a head the checkpoint lacks starts fresh, as wanted
            model = load(spec, head=head)
        cfg = model.config
        if vocab > cfg.vocab_size:
            raise LmatlasError(
                f"the tokenizer has {vocab} tokens, but the model {spec} has a vocabulary of {cfg.vocab_size}; "
                "use the model's own tokenizer or one that fits"
            )
        if causal is not None and cfg.causal != causal:
            kind = "a decoder (GPT-style)" if causal else "an encoder (BERT-style)"
            raise LmatlasError(f"{spec} is not {kind} model, which this objective trains")
        if (head == "seq2seq-lm") != cfg.is_encoder_decoder:
            kind = "an encoder-decoder (T5, BART)" if head == "seq2seq-lm" else "an encoder or a decoder"
            raise LmatlasError(f"{spec} is not {kind} model, which this objective trains")
        usable = cfg.usable_positions
        if usable is not None and block > usable:
            raise LmatlasError(f"--block {block} is longer than the {usable} positions of {spec}")
        return model.train()
    dropout = overrides.pop("dropout", None)
    fields = dict(vocab_size=vocab, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id,
                  eos_token_id=tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id)
    if dropout is not None:
        fields.update(hidden_dropout=dropout, attention_dropout=dropout)
    preset = architecture_preset(spec, **fields, **overrides)
    cfg = preset.config
    if preset.skeleton == "encoder-decoder":
        if head != "seq2seq-lm":
            raise LmatlasError(f"the architecture {spec} is an encoder-decoder; this objective trains "
                               "an encoder or a decoder")
        # T5 starts decoding from the padding token, BART's family from </s>.
        start = tokenizer.pad_token_id if cfg.model_type == "t5" else fields["eos_token_id"]
        if start is None:
            raise LmatlasError(f"the tokenizer {tokenizer.name_or_path} has no "
                               f"{'padding' if cfg.model_type == 't5' else 'end-of-sequence'} token, "
                               f"which {cfg.model_type} starts decoding from")
        cfg = cfg.replace(decoder_start_token_id=start)
        block += 2  # room for the start and end tokens of a target
    elif head == "seq2seq-lm":
        raise LmatlasError(f"the architecture {spec} is not an encoder-decoder (T5, BART), which this objective trains")
    if causal is not None and cfg.causal != causal:
        kind = "a decoder (GPT-style)" if causal else "an encoder (BERT-style)"
        raise LmatlasError(f"the architecture {spec} is not {kind}, which this objective trains")
    cfg = cfg.replace(max_positions=max(_positions_needed(cfg, block), 1) if cfg.position_embedding in
                      ("learned", "sinusoidal") else max(cfg.max_positions, block))
    if cfg.type_vocab_size:
        cfg = cfg.replace(type_vocab_size=min(cfg.type_vocab_size, 2))
    from ..save import as_saved

    # As loading the saved folder will build it (and fail now, not at the first checkpoint,
    # if it cannot be saved).
    model = LmatlasModel(as_saved(cfg, head), head)
    if model.config.model_type == "t5":
        t5_init(model)
    elif cfg.causal and cfg.norm_position == "pre":
        scale_residual_init(model)
    return model.train()


def t5_init(model: LmatlasModel) -> None:
    """T5's (Mesh TensorFlow's) initialisation. Its attention does not divide the scores by
    sqrt(d): the queries start smaller by 1/sqrt(d_kv) instead; every projection starts at
    1/sqrt(fan-in) and the token table at unit scale (the tied output rescales by d^-0.5)."""
    cfg = model.config
    d, d_kv = cfg.hidden_size, cfg.head_dim
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim < 2:
                continue
            if name.endswith("attn.qkv.weight"):  # [q; k; v] of self-attention
                q = cfg.num_heads * d_kv
                p[:q].normal_(0.0, (d * d_kv) ** -0.5)
                p[q:].normal_(0.0, d**-0.5)
            elif name.endswith("cross_attn.q.weight"):
                p.normal_(0.0, (d * d_kv) ** -0.5)
            elif name.endswith(("cross_attn.kv.weight", "mlp.fc_in.weight", "mlp.gate.weight",
                                "relative_attention_bias.weight")):
                p.normal_(0.0, d**-0.5)
            elif name.endswith(("attn.out.weight", "cross_attn.out.weight")):
                p.normal_(0.0, (cfg.num_heads * d_kv) ** -0.5)
            elif name.endswith("mlp.fc_out.weight"):
                p.normal_(0.0, p.shape[1] ** -0.5)
            elif name.endswith(("tokens.weight", "head.decoder.weight")):
                p.normal_(0.0, 1.0)


def scale_residual_init(model: LmatlasModel, std: float = 0.02) -> None:
    """GPT-2's initialisation: the projections that write into the residual stream start
    smaller by 1/sqrt(2 * layers), as the stream adds one per sublayer."""
    n = model.config.num_layers
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("attn.out.weight", "mlp.fc_out.weight")):
                p.normal_(0.0, std / math.sqrt(2 * n))


def check_stream(stream: TokenStream, length: int, what: str, files: Sequence[str], vocab_size: int) -> None:
    if len(stream) < length:
        raise LmatlasError(
            f"{', '.join(map(str, files))}: the {what} has {len(stream)} tokens, fewer than one block of {length}; "
            "give more text or a smaller --block"
        )
    if len(stream) and int(stream.ids.max()) >= vocab_size:
        raise LmatlasError(f"token id {int(stream.ids.max())} of the data is outside the model's vocabulary of {vocab_size}")


# ---------------------------------------------------------------------------------------------
# Shared by the single-model tasks
# ---------------------------------------------------------------------------------------------


class ModelTask(Task):
    """A task training one ``LmatlasModel`` saved with its tokenizer."""

    def __init__(self, model: LmatlasModel, tokenizer_dir: str | os.PathLike | None):
        self.module = model
        self.tokenizer_dir = tokenizer_dir

    def save(self, module: nn.Module, folder: Path) -> None:
        from ..save import save_model

        save_model(module, folder, self.tokenizer_dir)

    def load(self, folder: Path) -> None:
        load_weights(self.module, folder)

    def signature(self) -> dict[str, Any]:
        from ..save import hf_config

        cfg = self.module.config
        return {"head": self.module.head_name, **_shape(hf_config(cfg, self.module.head_name))}


def _shape(config: dict[str, Any]) -> dict[str, Any]:
    skip = {"architectures", "torch_dtype", "transformers_version", "id2label", "label2id"}
    return {k: v for k, v in config.items() if k not in skip}


def load_weights(model: LmatlasModel, folder: Path) -> None:
    """Copy the weights of the Hugging Face folder ``folder`` into ``model`` (same shapes)."""
    from ..loader import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = load(folder, head=model.head_name)
    model.load_state_dict(saved.state_dict())


def mean_loss(total: float, count: int) -> dict[str, float]:
    """The loss per predicted token and its perplexity (capped so that exp cannot overflow)."""
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50))}


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


# ---------------------------------------------------------------------------------------------
# GPT: causal language modelling
# ---------------------------------------------------------------------------------------------


class CausalLMTask(ModelTask):
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
        offsets = tiled_offsets(len(self.val), self.block + 1, stride=self.block)
        if self.eval_windows:
            offsets = offsets[torch.linspace(0, len(offsets) - 1, min(self.eval_windows, len(offsets))).long()]
        batches = (obj.causal_lm(windows(self.val, offsets[i : i + EVAL_BATCH], self.block + 1)[0])
                   for i in range(0, len(offsets), EVAL_BATCH))
        return causal_eval(module, batches, ctx)

    def state_dict(self):
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state["sampler"])


# ---------------------------------------------------------------------------------------------
# BERT / RoBERTa: masked language modelling
# ---------------------------------------------------------------------------------------------


class MaskedWindows:
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
            raise LmatlasError(f"--block {block} leaves no room for text between the special tokens")
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
        offsets = tiled_offsets(len(stream), self.inner)
        if max_windows:
            offsets = offsets[torch.linspace(0, len(offsets) - 1, min(max_windows, len(offsets))).long()]
        gen = torch.Generator().manual_seed(seed)
        for i in range(0, len(offsets), EVAL_BATCH):
            ids, starts = self.frame_ids(*windows(stream, offsets[i : i + EVAL_BATCH], self.inner))
            inputs, labels = self.mask(ids, starts, gen)
            yield {"input_ids": inputs, "labels": labels, "original": ids}

    def state_dict(self):
        return {"sampler": self.sampler.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["generator"])


def _slice(batch: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
    return {k: rank_slice(v, ctx.rank, ctx.world) for k, v in batch.items()}


class MaskedLMTask(ModelTask):
    name = "masked-lm"
    weights = {"loss": 1.0}
    metric = "loss"

    def __init__(self, model, tokenizer, tokenizer_dir, train: TokenStream, val: TokenStream | None, block: int,
                 seed: int, probability: float = 0.15, whole_word: bool = False, eval_windows: int | None = None):
        super().__init__(model, tokenizer_dir)
        self.data = MaskedWindows(tokenizer, train, block, seed, probability, whole_word, model.config.vocab_size)
        self.val, self.eval_windows = val, eval_windows

    def next_batch(self, batch_size, ctx):
        batch = _slice(self.data.draw(batch_size * ctx.world), ctx)
        del batch["original"]
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

    def state_dict(self):
        return self.data.state_dict()

    def load_state_dict(self, state):
        self.data.load_state_dict(state)


# ---------------------------------------------------------------------------------------------
# ELECTRA: replaced token detection
# ---------------------------------------------------------------------------------------------


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


class ElectraTask(Task):
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
        batch = _slice(self.data.draw(batch_size * ctx.world), ctx)
        del batch["original"]
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
        from ..save import save_model

        save_model(module.discriminator, folder, self.tokenizer_dir)
        save_model(module.generator, folder / "generator", self.tokenizer_dir)

    def load(self, folder):
        load_weights(self.module.discriminator, folder)
        load_weights(self.module.generator, folder / "generator")
        self.module.share_embeddings()

    def signature(self):
        from ..save import hf_config

        d, g = self.module.discriminator, self.module.generator
        return {"discriminator": _shape(hf_config(d.config, d.head_name)),
                "generator": _shape(hf_config(g.config, g.head_name))}

    def state_dict(self):
        return self.data.state_dict()

    def load_state_dict(self, state):
        self.data.load_state_dict(state)


# ---------------------------------------------------------------------------------------------
# DistilBERT: knowledge distillation
# ---------------------------------------------------------------------------------------------


class DistillationTask(ModelTask):
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
        batch = _slice(self.data.draw(batch_size * ctx.world), ctx)
        del batch["original"]
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

    def state_dict(self):
        return self.data.state_dict()

    def load_state_dict(self, state):
        self.data.load_state_dict(state)


# ---------------------------------------------------------------------------------------------
# Alpaca: instruction tuning
# ---------------------------------------------------------------------------------------------


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
        raise LmatlasError(f"{source}: no example has room for its response within --block {max_length}")
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


class InstructionTask(ModelTask):
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

    def state_dict(self):
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state["sampler"])


# ---------------------------------------------------------------------------------------------
# T5 and BART: denoising a corrupted text with an encoder-decoder
# ---------------------------------------------------------------------------------------------


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


class DenoisingTask(ModelTask):
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
        batch = _slice(self.corrupt(ids, self.generator), ctx)
        batch["counts"] = {"loss": int((batch["labels"] != obj.IGNORE).sum())}
        return batch

    def loss_terms(self, module, batch):
        return {"loss": seq2seq_loss(module, batch)}

    def evaluate(self, module, ctx):
        if self.val is None:
            return {}
        offsets = tiled_offsets(len(self.val), self.block)
        if self.eval_windows:
            offsets = offsets[torch.linspace(0, len(offsets) - 1, min(self.eval_windows, len(offsets))).long()]
        gen = torch.Generator().manual_seed(0)
        total, count = 0.0, 0
        for i in range(0, len(offsets), EVAL_BATCH):
            ids, _ = windows(self.val, offsets[i : i + EVAL_BATCH], self.block)
            batch = {k: v.to(ctx.device) for k, v in self.corrupt(ids, gen).items()}
            total += float(seq2seq_loss(module, batch))
            count += int((batch["labels"] != obj.IGNORE).sum())
        return mean_loss(total, count)

    def state_dict(self):
        return {"sampler": self.sampler.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["generator"])


__all__ = [
    "CausalLMTask",
    "DenoisingTask",
    "DistillationTask",
    "ElectraPair",
    "ElectraTask",
    "InstructionTask",
    "MaskedLMTask",
    "build_model",
    "electra_generator_config",
    "instruction_examples",
    "load_weights",
    "pad_examples",
    "scale_residual_init",
]
