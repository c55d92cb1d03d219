"""Typed recipes for pretraining, and ``train``: one call from a recipe to a trained model.

A recipe names what to train with one paper's objective: the model (an architecture preset
built from scratch at the size the recipe gives, or a checkpoint folder to continue), the
data, the tokenizer and the objective's own settings. ``train(recipe, TrainConfig(out=...))``
builds the task and runs the trainer, on one process or under ``torchrun``::

    from lmatlas.training import CausalLMRecipe, TrainConfig, train

    recipe = CausalLMRecipe(model="gpt2", data=["input.txt"], tokenizer="char", block=64,
                            num_layers=2, num_heads=2, hidden_size=64)
    summary = train(recipe, TrainConfig(out="runs/gpt", steps=200))

Errors about a field name the field (``block must be at least 2``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Sequence

import torch

from ..errors import LmatlasError
from . import distributed as dist_
from .config import TrainConfig
from .distributed import Context
from .fields import FieldError
from .trainer import Task, Trainer

PathLike = str | os.PathLike

_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_ROBERTA_LIKE = ("roberta", "xlm-roberta", "bart", "mbart")


class Recipe(Protocol):
    """What ``train`` needs of a recipe: the task it trains, and the config completed with what
    the recipe decides (fine-tuning counts steps in epochs)."""

    def task(self, config: TrainConfig, ctx: Context) -> tuple[Task, TrainConfig]: ...


def train(recipe: Recipe, config: TrainConfig, ctx: Context | None = None) -> dict[str, Any]:
    """Train ``recipe`` as ``config`` says; returns the trainer's summary (steps, best metric,
    the output folder...). Under ``torchrun`` each process calls this with the same arguments."""
    own = ctx is None
    ctx = dist_.setup(config.device) if own else ctx
    finished = False
    try:
        torch.manual_seed(config.seed)
        task, config = recipe.task(config, ctx)
        if ctx.rank:
            torch.manual_seed(config.seed + ctx.rank)  # dropout differs across replicas
        summary = Trainer(task, config, ctx).fit()
        finished = True
        return summary
    finally:
        if own:
            dist_.teardown(synchronise=finished)


# ---------------------------------------------------------------------------------------------
# Pretraining
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pretraining:
    """The fields every pretraining objective shares. ``model``: an architecture preset
    (``lmatlas catalog --architectures``) or a checkpoint folder; ``tokenizer``: a folder, or a
    kind (char, bpe, byte-bpe, wordpiece, unigram) to train on ``data`` into ``out/tokenizer``
    (default: the checkpoint's own); ``val``: validation files (default: the last
    ``val_fraction`` of ``data``); the size fields apply to a preset."""

    model: str
    data: Sequence[PathLike]
    tokenizer: PathLike | None = None
    vocab_size: int | None = None  # of a tokenizer trained here
    block: int = 128  # tokens per sequence
    val: Sequence[PathLike] | None = None
    val_fraction: float = 0.1
    eval_windows: int | None = None  # at most this many validation sequences
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    dropout: float | None = None

    objective: ClassVar[str]
    #: the head the objective trains, and whether the model reads causally (None: either)
    head: ClassVar[str] = "causal-lm"
    causal: ClassVar[bool | None] = None
    #: the special tokens of a tokenizer trained here (None: the kind's own)
    specials: ClassVar[list[str] | None] = None

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, os.PathLike)) or not self.data:
            raise FieldError(lambda f: f"{f('data')} must be a list of one or more files")
        if self.block < 2:
            raise FieldError(lambda f: f"{f('block')} must be at least 2, not {self.block}")
        if not 0 <= self.val_fraction < 1:
            raise FieldError(lambda f: f"{f('val_fraction')} must be between 0 and 1, not {self.val_fraction}")

    def sizes(self) -> dict[str, Any]:
        """The size fields given, by their ``ModelConfig`` names."""
        names = ("num_layers", "num_heads", "num_kv_heads", "hidden_size", "intermediate_size", "dropout")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def task(self, config: TrainConfig, ctx: Context) -> tuple[Task, TrainConfig]:
        from ..checkpoint import resolve
        from ..tokenizer import load_tokenizer

        if config.steps is None:
            raise FieldError(lambda f: f"{f('steps')} must be given for pretraining")
        out = Path(config.out)
        # Everything that can be checked is, before any work or any write.
        model_type = self._check()
        if ctx.main:
            out.mkdir(parents=True, exist_ok=True)
        dist_.barrier(ctx)
        tok_dir = self._tokenizer_folder(out, bool(config.resume), ctx, model_type)
        tok_dir = tok_dir if tok_dir.is_dir() else resolve(tok_dir, weights=False)
        return self.build(load_tokenizer(tok_dir), tok_dir, config.seed), config

    def build(self, tokenizer, tokenizer_dir: Path, seed: int) -> Task:
        """The objective's task over this recipe's model and data."""
        raise NotImplementedError

    def _check(self) -> str | None:
        """The checks of the model, the data and the tokenizer that need no work: the preset's
        ``model_type`` (None for a checkpoint)."""
        from .models import check_model
        from .tokenizer_trainer import KINDS

        for name, files in (("data", self.data), ("val", self.val or ())):
            for file in files:
                if Path(file).is_dir():
                    raise FieldError(lambda f, file=file: f"{f(name)} {file}: is a folder; give text files")
                if not Path(file).exists():
                    raise FieldError(lambda f, file=file: f"{f(name)} {file}: no such file")
        sizes = {} if self.objective == "distillation" else self.sizes()
        model_type = check_model(str(self.model), self.head, sizes, self.causal)
        if self.tokenizer is None and model_type is not None:
            raise FieldError(lambda f: f"{f('tokenizer')} is needed to train {self.model} from scratch: a tokenizer "
                                       f"folder, or one of {', '.join(KINDS)} to train one on {f('data')}")
        path_like = str(self.tokenizer).startswith((".", "/", "~")) or str(self.tokenizer).count("/") > 1
        if self.tokenizer is not None and path_like and not Path(self.tokenizer).expanduser().is_dir():
            raise FieldError(lambda f: f"{f('tokenizer')} {self.tokenizer}: no such folder, and not one of "
                                       f"{', '.join(KINDS)}")
        return model_type

    def _tokenizer_folder(self, out: Path, resume: bool, ctx: Context, model_type: str | None) -> Path:
        from .tokenizer_trainer import KINDS, train_tokenizer

        if self.tokenizer is not None and str(self.tokenizer) in KINDS and not Path(self.tokenizer).is_dir():
            folder = out / "tokenizer"
            if not (resume and (folder / "tokenizer.json").is_file()):
                if ctx.main:
                    train_tokenizer(self.data, str(self.tokenizer), folder, vocab_size=self.vocab_size,
                                    specials=self._specials(str(self.tokenizer), model_type))
                dist_.barrier(ctx)
            return folder
        if self.tokenizer is not None:
            return Path(self.tokenizer)
        if Path(self.model).expanduser().is_dir():
            return Path(self.model)
        raise FieldError(lambda f: f"{f('tokenizer')} is needed to train {self.model} from scratch: a tokenizer "
                                   f"folder, or one of {', '.join(KINDS)} to train one on {f('data')}")

    def _specials(self, kind: str, model_type: str | None) -> list[str] | None:
        return self.specials

    def _model(self, tokenizer, head: str | None = None, sizes: bool = True):
        from .models import build_model

        return build_model(self.model, head or self.head, tokenizer, self.block, self.sizes() if sizes else None,
                           causal=self.causal)

    def _streams(self, tokenizer, length: int, vocab_size: int, units=None):
        """(train, validation) token streams, each with at least one window of ``length``;
        ``units``: a ``data.PhraseUnits`` (ERNIE's masking units)."""
        from .data import check_stream, load_stream

        sep = tokenizer.eos_token_id
        stream = load_stream(tokenizer, self.data, separator_id=sep, units=units)
        if self.val:
            train, val = stream, load_stream(tokenizer, self.val, separator_id=sep, units=units)
        elif self.val_fraction > 0:
            train, val = stream.split(self.val_fraction)
        else:
            train, val = stream, None
        check_stream(train, length, "training data", self.data, vocab_size)
        if val is not None:
            check_stream(val, length, "validation data", self.val or self.data, vocab_size)
        return train, val


@dataclass(frozen=True)
class CausalLMRecipe(Pretraining):
    """GPT: predict each next token of the stream."""

    objective: ClassVar[str] = "causal-lm"
    causal: ClassVar[bool | None] = True

    def build(self, tokenizer, tokenizer_dir, seed):
        from .tasks import CausalLMTask

        model = self._model(tokenizer)
        train, val = self._streams(tokenizer, self.block + 1, model.config.vocab_size)
        return CausalLMTask(model, tokenizer_dir, train, val, self.block, seed, self.eval_windows)


@dataclass(frozen=True)
class MaskedLMRecipe(Pretraining):
    """BERT, RoBERTa: predict the masked ``mask_probability`` of the tokens (whole words with
    ``whole_word``), masked anew at each draw.

    ERNIE's knowledge masking: ``phrases``, a file of phrases and named entities (one a line);
    where one occurs in the text, its words are masked together, as one word is with
    ``whole_word`` (which it implies)."""

    mask_probability: float = 0.15
    whole_word: bool = False
    phrases: str | None = None

    objective: ClassVar[str] = "masked-lm"
    head: ClassVar[str] = "masked-lm"
    causal: ClassVar[bool | None] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.mask_probability < 1:
            raise FieldError(lambda f: f"{f('mask_probability')} must be between 0 and 1, not {self.mask_probability}")
        if self.phrases is not None and not Path(self.phrases).is_file():  # before any work or write
            raise FieldError(lambda f: f"{f('phrases')} {self.phrases}: no such file")

    def _specials(self, kind, model_type):
        # What masking needs, which a character or byte-level tokenizer lacks by default: BERT's
        # tokens, or RoBERTa's for a byte-level BPE of RoBERTa's family (its own tokenizer's kind).
        if kind == "byte-bpe":
            return ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] if model_type in _ROBERTA_LIKE else _BERT_SPECIALS
        return _BERT_SPECIALS if kind == "char" else None

    def build(self, tokenizer, tokenizer_dir, seed):
        from .tasks import MaskedLMTask

        model = self._model(tokenizer)
        train, val = self._streams(tokenizer, self.block, model.config.vocab_size, self._units(tokenizer))
        return MaskedLMTask(model, tokenizer, tokenizer_dir, train, val, self.block, seed, self.mask_probability,
                            self.whole_units, self.eval_windows)

    @property
    def whole_units(self) -> bool:
        """Whether masking takes whole words (and, with ``phrases``, whole phrases)."""
        return self.whole_word or self.phrases is not None

    def _units(self, tokenizer):
        """ERNIE's phrase units from ``phrases``, or None."""
        if self.phrases is None:
            return None
        from ..files import read_text
        from .data import PhraseUnits

        units = PhraseUnits(tokenizer, read_text(self.phrases).splitlines())
        if not units.longest:
            raise FieldError(lambda f: f"{f('phrases')} {self.phrases}: no phrase of two words or more in it "
                                       "(one-word entities are whole words already: use whole_word)")
        return units


@dataclass(frozen=True)
class ElectraRecipe(MaskedLMRecipe):
    """ELECTRA: a generator ``generator_fraction`` as wide as the discriminator fills the
    masks; the discriminator tells which tokens were replaced."""

    generator_fraction: float = 0.25

    objective: ClassVar[str] = "replaced-token-detection"
    head: ClassVar[str] = "replaced-token-detection"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.generator_fraction <= 1:
            raise FieldError(lambda f: f"{f('generator_fraction')} must be in (0, 1], not {self.generator_fraction}")

    def build(self, tokenizer, tokenizer_dir, seed):
        from ..model import LmatlasModel
        from ..save import hf_config
        from .tasks import ElectraTask, electra_generator_config

        disc = self._model(tokenizer)
        gen = LmatlasModel(electra_generator_config(disc.config, self.generator_fraction), "masked-lm").train()
        hf_config(disc.config, "replaced-token-detection")  # fails now if the discriminator cannot be saved
        train, val = self._streams(tokenizer, self.block, disc.config.vocab_size, self._units(tokenizer))
        return ElectraTask(disc, gen, tokenizer, tokenizer_dir, train, val, self.block, seed, self.mask_probability,
                           self.whole_units, self.eval_windows)


@dataclass(frozen=True)
class DistillationRecipe(MaskedLMRecipe):
    """DistilBERT: ``model`` is the teacher; the student starts from its ``student_layers``
    (default every other one) and learns its predictions at ``temperature``."""

    temperature: float = 2.0
    student_layers: Sequence[int] | None = None

    objective: ClassVar[str] = "distillation"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sizes():
            raise FieldError(lambda f: "distillation builds the student from the teacher's layers; use "
                                       f"{f('student_layers')}, not size options")
        if self.temperature <= 0:
            raise FieldError(lambda f: f"{f('temperature')} must be positive, not {self.temperature}")

    def build(self, tokenizer, tokenizer_dir, seed):
        from .objectives import student_from_teacher
        from .tasks import DistillationTask

        teacher = self._model(tokenizer, sizes=False)
        depth = teacher.config.num_layers
        layers = None if self.student_layers is None else list(self.student_layers)
        bad = [i for i in layers or [] if not 0 <= i < depth]
        if bad:
            raise FieldError(lambda f: f"{f('student_layers')}: the teacher has layers 0 to {depth - 1}, not {bad[0]}")
        student = student_from_teacher(teacher, layers).train()
        train, val = self._streams(tokenizer, self.block, teacher.config.vocab_size, self._units(tokenizer))
        return DistillationTask(student, teacher, tokenizer, tokenizer_dir, train, val, self.block, seed,
                                self.temperature, self.mask_probability, self.whole_units, self.eval_windows)


@dataclass(frozen=True)
class InstructionRecipe(Pretraining):
    """Alpaca: a decoder learns the responses of JSON Lines rows (instruction, optional input,
    output); the prompt's tokens are not scored."""

    objective: ClassVar[str] = "instruction"

    def _specials(self, kind, model_type):
        raise LmatlasError("train a tokenizer with `lmatlas tokenizer train` for instruction data")

    def build(self, tokenizer, tokenizer_dir, seed):
        from .data import read_table
        from .tasks import InstructionTask, instruction_examples

        model = self._model(tokenizer)

        def examples(files):
            rows = [r for f in files for r in read_table(f, "jsonl")]
            return instruction_examples(tokenizer, rows, self.block, ", ".join(map(str, files)))

        train = examples(self.data)
        if self.val:
            dev = examples(self.val)
        elif self.val_fraction > 0 and len(train) >= 10:
            cut = int(len(train) * (1 - self.val_fraction))
            train, dev = train[:cut], train[cut:]
        else:
            dev = []
        return InstructionTask(model, tokenizer, tokenizer_dir, train, dev, seed)


@dataclass(frozen=True)
class SpanCorruptionRecipe(Pretraining):
    """T5: spans of the text become sentinels; the decoder writes the spans they hide."""

    objective: ClassVar[str] = "span-corruption"
    head: ClassVar[str] = "seq2seq-lm"
    # T5's: padding, end, unknown, then 100 sentinels.
    specials: ClassVar[list[str] | None] = ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(100)]

    def build(self, tokenizer, tokenizer_dir, seed):
        from .tasks import DenoisingTask

        model = self._model(tokenizer)
        train, val = self._streams(tokenizer, self.block, model.config.vocab_size)
        return DenoisingTask(self.objective, model, tokenizer, tokenizer_dir, train, val, self.block, seed,
                             self.eval_windows)


@dataclass(frozen=True)
class DenoisingRecipe(SpanCorruptionRecipe):
    """BART: sentences shuffled and spans masked (text infilling); the decoder writes the text."""

    objective: ClassVar[str] = "denoising"
    specials: ClassVar[list[str] | None] = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # BART's


#: Each objective's recipe, by the objective's name.
RECIPES: dict[str, type[Pretraining]] = {
    r.objective: r for r in (CausalLMRecipe, MaskedLMRecipe, ElectraRecipe, DistillationRecipe, InstructionRecipe,
                             SpanCorruptionRecipe, DenoisingRecipe)
}

__all__ = [
    "RECIPES",
    "CausalLMRecipe",
    "DenoisingRecipe",
    "DistillationRecipe",
    "ElectraRecipe",
    "InstructionRecipe",
    "MaskedLMRecipe",
    "Pretraining",
    "Recipe",
    "SpanCorruptionRecipe",
    "train",
]
