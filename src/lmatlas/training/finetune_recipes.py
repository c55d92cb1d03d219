"""Typed recipes for fine-tuning a pretrained model: classification, NER, extractive QA and
sequence to sequence. ``lmatlas.training.train`` runs them like the pretraining recipes::

    from lmatlas.training import ClassifyRecipe, TrainConfig, train

    train(ClassifyRecipe(train="train.tsv", dev="dev.tsv", model="my-bert"),
          TrainConfig(out="runs/sst2", steps=None, lr=5e-5, batch_size=32))

With ``steps=None`` the run lasts ``epochs`` passes over the training file, and with a dev
file it evaluates once per epoch (unless ``eval_every`` says otherwise).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import LmatlasError
from .config import TrainConfig
from .distributed import Context
from .fields import FieldError
from .trainer import Task

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Finetuning:
    """The fields every fine-tuning task shares. ``model``: a folder or hub id (default: the
    packaged all-MiniLM-L6-v2); ``train`` and ``dev``: the task's files (the best model on
    ``dev`` is kept); ``max_length``: tokens per input (default 128)."""

    train: PathLike
    model: PathLike | None = None
    dev: PathLike | None = None
    epochs: float | None = 3.0  # passes over ``train`` when the config gives no steps
    max_length: int | None = None

    task_name: ClassVar[str]
    default_max_length: ClassVar[int] = 128

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs <= 0:
            raise FieldError(lambda f: f"{f('epochs')} must be positive, not {self.epochs}")
        if self.length < 8:
            raise FieldError(lambda f: f"{f('max_length')} must be at least 8, not {self.length}")

    @property
    def length(self) -> int:
        return self.max_length or self.default_max_length

    def task(self, config: TrainConfig, ctx: Context) -> tuple[Task, TrainConfig]:
        from ..checkpoint import resolve
        from ..embeddings import default_model_path
        from ..tokenizer import load_tokenizer

        if config.steps is None and self.epochs is None:
            raise FieldError(lambda f: f"give {f('steps')} or {f('epochs')}")
        folder = default_model_path() if self.model is None else resolve(self.model)
        task = self.build(folder, load_tokenizer(folder), config.seed)
        per_step = config.batch_size * config.grad_accum * ctx.world
        epoch_steps = max(1, math.ceil(len(task.train_rows) / per_step))
        steps = config.steps or max(1, round(self.epochs * epoch_steps))
        eval_every = config.eval_every or (min(epoch_steps, steps) if self.dev else 0)
        return task, dataclasses.replace(config, steps=steps, eval_every=eval_every)

    def build(self, folder: Path, tokenizer, seed: int) -> Task:
        """The fine-tuning task over the model in ``folder`` and this recipe's files."""
        raise NotImplementedError


@dataclass(frozen=True)
class ClassifyRecipe(Finetuning):
    """Sentence (or pair) classification from a TSV, CSV or JSON Lines file with named columns
    (``format``: tsv, csv or jsonl; default from the extension). Takes an encoder, or a decoder
    read at each text's last token."""

    format: str | None = None
    text_column: str = "sentence"
    text_pair_column: str | None = None  # second text of a pair (NLI, paraphrase)
    label_column: str = "label"

    task_name: ClassVar[str] = "classify"

    def build(self, folder, tokenizer, seed):
        from . import finetune as ft
        from .data import column, read_table

        rows = read_table(self.train, self.format)
        id2label = ft.label_set(column(rows, self.label_column, self.train, "label_column"))
        if len(id2label) < 2:
            raise LmatlasError(f"{self.train}: only one label ({id2label[0]!r}); classification needs at least two")
        model = ft.load_for_finetuning(folder, "sequence-classification", id2label)
        types = ft.uses_token_types(model)

        def examples(path, table):
            return ft.classification_examples(tokenizer, table, path, self.text_column, self.text_pair_column,
                                              self.label_column, model.config.label2id, self.length, types)

        train = examples(self.train, rows)
        dev = examples(self.dev, read_table(self.dev, self.format)) if self.dev else None
        return ft.ClassifyTask(model, tokenizer, folder, train, dev, seed)


@dataclass(frozen=True)
class NERRecipe(Finetuning):
    """Named entity recognition on CoNLL files (a word and its tag per line)."""

    task_name: ClassVar[str] = "ner"

    def build(self, folder, tokenizer, seed):
        from . import finetune as ft
        from .data import read_conll

        sentences = read_conll(self.train)
        tags = sorted({t for _, ts in sentences for t in ts}, key=lambda t: (t != "O", t[2:], t))
        model = ft.load_for_finetuning(folder, "token-classification", dict(enumerate(tags)))
        label2id = model.config.label2id
        train = ft.ner_examples(tokenizer, sentences, self.train, label2id, self.length)
        dev = ft.ner_examples(tokenizer, read_conll(self.dev), self.dev, label2id, self.length) if self.dev else None
        return ft.NERTask(model, tokenizer, folder, train, dev, seed)


@dataclass(frozen=True)
class QARecipe(Finetuning):
    """Extractive question answering on SQuAD JSON; long contexts are read in windows that
    overlap by ``stride`` tokens; ``null_answers``: SQuAD 2.0's unanswerable questions."""

    stride: int = 128
    null_answers: bool = False

    task_name: ClassVar[str] = "qa"
    default_max_length: ClassVar[int] = 384

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stride >= self.length // 2:
            raise FieldError(lambda f: f"{f('stride')} {self.stride} must be less than half of {f('max_length')} "
                                       f"{self.length}")

    def build(self, folder, tokenizer, seed):
        from . import finetune as ft
        from .data import read_squad

        model = ft.load_for_finetuning(folder, "question-answering")
        questions = read_squad(self.train)
        unanswerable = sum(1 for q in questions if not q["answers"]["text"])
        if unanswerable and not self.null_answers:
            raise FieldError(lambda f: f"{self.train}: {unanswerable} questions have no answer (SQuAD 2.0); "
                                       f"set {f('null_answers')}")
        train = ft.qa_features(tokenizer, questions, self.length, self.stride)
        dev_q = read_squad(self.dev) if self.dev else None
        dev_f = ft.qa_features(tokenizer, dev_q, self.length, self.stride) if dev_q else None
        return ft.QATask(model, tokenizer, folder, train, dev_q, dev_f, seed, self.null_answers)


@dataclass(frozen=True)
class Seq2SeqRecipe(Finetuning):
    """Summarisation, translation: an encoder-decoder learns ``target_column`` from
    ``source_column`` (after ``source_prefix``, e.g. "summarize: " for T5); evaluated on
    ROUGE-L of its greedy (or ``num_beams`` beam) outputs."""

    format: str | None = None
    source_column: str = "source"
    target_column: str = "target"
    source_prefix: str = ""
    max_target_length: int = 128
    max_new_tokens: int = 64
    num_beams: int = 1

    task_name: ClassVar[str] = "seq2seq"

    def build(self, folder, tokenizer, seed):
        from . import finetune as ft
        from .data import read_table

        model = ft.load_for_finetuning(folder, "seq2seq-lm")

        def examples(path):
            return ft.seq2seq_examples(tokenizer, read_table(path, self.format), path, self.source_column,
                                       self.target_column, self.source_prefix, self.length, self.max_target_length)

        train = examples(self.train)
        dev = examples(self.dev) if self.dev else None
        return ft.Seq2SeqTask(model, tokenizer, folder, train, dev, seed, self.max_new_tokens, self.num_beams)


#: Each fine-tuning task's recipe, by the task's name.
FINETUNE_RECIPES: dict[str, type[Finetuning]] = {
    r.task_name: r for r in (ClassifyRecipe, NERRecipe, QARecipe, Seq2SeqRecipe)
}

__all__ = ["FINETUNE_RECIPES", "ClassifyRecipe", "Finetuning", "NERRecipe", "QARecipe", "Seq2SeqRecipe"]
