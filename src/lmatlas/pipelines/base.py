"""What every task pipeline shares: options, inputs, batching, the model call.

A task turns each input into one or more *features* (token ids plus whatever it needs to read
the answer back: offsets, which label a pair stands for, ...), the model runs over the features
of a whole call in padded batches, and the task turns each input's outputs into the
transformers schema. A chunked task (question answering over a long context, zero-shot
classification with several labels) is just a task whose inputs give several features.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import LmatlasError

_UNSET = object()


@dataclass(frozen=True)
class Option:
    """One task option: its default, a checker, and a line of help (the CLI shows it)."""

    default: Any
    check: Callable[[str, Any], Any]
    help: str
    cli: str = "str"  # how the CLI reads it: str, int, float, bool, int_or_all, json


# -- option checkers: (name, value) -> value, or a LmatlasError naming the option -------------


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LmatlasError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def optional_positive_int(name: str, value: Any) -> int | None:
    return None if value is None else positive_int(name, value)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise LmatlasError(f"{name} must be True or False, not {value!r}")
    return bool(value)


def string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise LmatlasError(f"{name} must be a string, not {value!r}")
    return value


def strings(name: str, value: Any) -> list[str] | None:
    """None, one string, or a list of strings."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise LmatlasError(f"{name} must be a string or a list of strings, not {value!r}")


def choice(*choices: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        text = str(getattr(value, "value", value)).lower()  # transformers' enums carry .value
        if text not in choices:
            raise LmatlasError(f"{name}={value!r} is not one of {', '.join(choices)}")
        return text

    return check


def mapping(name: str, value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise LmatlasError(f"{name} must be a dict of tokenizer arguments, not {value!r}")
    return dict(value)


# -- the pipeline -------------------------------------------------------------------------------


class Pipeline:
    """A task over a model and its tokenizer: ``pipe(one_input)`` or ``pipe([inputs])``.

    Options given to ``lmatlas.pipeline(...)`` are the defaults of every call; options given to
    a call override them for that call. ``batch_size`` is how many features run through the
    model at once.
    """

    task: str = ""
    OPTIONS: dict[str, Option] = {}
    # The model outputs the task reads, and whether each has one row per token.
    FIELDS: dict[str, bool] = {"logits": True}

    def __init__(self, model, tokenizer, task: str | None = None, batch_size: int = 8, **options: Any):
        self.model = model
        self.tokenizer = tokenizer
        if task:
            self.task = task
        self.batch_size = positive_int("batch_size", batch_size)
        self.options = {name: opt.default for name, opt in self.OPTIONS.items()}
        self.options.update(self.check_options(options))

    def __repr__(self) -> str:
        return f"<lmatlas pipeline {self.task!r} on {getattr(self.tokenizer, 'name_or_path', '?')}>"

    # -- options ------------------------------------------------------------------------------

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in options.items():
            if name not in self.OPTIONS:
                known = ", ".join(sorted(self.OPTIONS)) or "none"
                raise LmatlasError(f"{self.task} takes no option {name!r}; its options are: {known}")
            out[name] = self.OPTIONS[name].check(name, value)
        return out

    # -- calling ------------------------------------------------------------------------------

    def __call__(self, inputs: Any = _UNSET, *, batch_size: int | None = None, **options: Any):
        if inputs is _UNSET:
            raise LmatlasError(f"{self.task} needs an input")
        opts = {**self.options, **self.check_options(options)}
        single, items = self.split_inputs(inputs)
        if not items:
            raise LmatlasError(f"{self.task} got an empty list of inputs")
        results = self.run(items, opts, self.batch_size if batch_size is None else positive_int("batch_size", batch_size))
        return self.finish(results[0], opts, inputs) if single else results

    def split_inputs(self, inputs: Any) -> tuple[bool, list]:
        """(is one input, the inputs as a list), each input checked."""
        if isinstance(inputs, list):
            return False, [self.check_input(x, i if len(inputs) > 1 else None) for i, x in enumerate(inputs)]
        return True, [self.check_input(inputs, None)]

    def check_input(self, item: Any, index: int | None) -> Any:
        if not isinstance(item, str):
            raise LmatlasError(f"{where(index)}{self.task} takes a string or a list of strings, not {type(item).__name__}")
        return item

    def finish(self, result: Any, opts: dict, inputs: Any) -> Any:
        """The result of a single (not listed) input; a task may reshape it, as transformers does."""
        return result

    def run(self, items: list, opts: dict, batch_size: int) -> list:
        self.prepare(opts)
        per_item = []
        for i, item in enumerate(items):
            try:
                per_item.append(self.features(item, opts))
            except LmatlasError as e:
                raise LmatlasError(f"{where(i if len(items) > 1 else None)}{e}") from None
        flat = [f for feats in per_item for f in feats]
        outputs = self.forward(flat, batch_size)
        results, at = [], 0
        for item, feats in zip(items, per_item):
            results.append(self.postprocess(item, feats, outputs[at : at + len(feats)], opts))
            at += len(feats)
        return results

    # -- what a task defines ------------------------------------------------------------------

    def prepare(self, opts: dict) -> None:
        """Work done once per call before the inputs are encoded (e.g. resolving targets)."""

    def features(self, item: Any, opts: dict) -> list[dict]:
        raise NotImplementedError

    def postprocess(self, item: Any, features: list[dict], outputs: list[dict], opts: dict) -> Any:
        raise NotImplementedError

    # -- the model ----------------------------------------------------------------------------

    def max_length(self) -> int | None:
        """How many tokens one sequence may have: the tokenizer's model_max_length, capped by
        the positions the model has (transformers would index past its position table)."""
        limits = []
        if self.tokenizer.model_max_length < 10**20:
            limits.append(int(self.tokenizer.model_max_length))
        positions = model_positions(self.model)
        if positions is not None:
            limits.append(positions)
        return min(limits) if limits else None

    @torch.inference_mode()
    def forward(self, features: list[dict], batch_size: int) -> list[dict[str, np.ndarray]]:
        """Run the model over features in padded batches, longest first; each feature gets its
        own rows of every field in FIELDS back (as float32 numpy arrays, padding cut off)."""
        if not features:
            return []
        pad_id, batch_size = self.padding(batch_size)
        use_types = "token_type_ids" in self.tokenizer.model_input_names and reads_token_types(self.model)
        # XLNet's heads read the last position: its batches are padded on the left, as its tokenizer pads.
        left = getattr(getattr(self.model, "backbone", None), "padding_side", "right") == "left"
        lengths = [len(f["input_ids"]) for f in features]
        order = sorted(range(len(features)), key=lambda i: -lengths[i])
        out: list[dict[str, np.ndarray] | None] = [None] * len(features)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(lengths[i] for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            pad_type = getattr(self.tokenizer, "pad_token_type_id", 0)
            types = torch.full((len(idx), width), pad_type, dtype=torch.long) if use_types else None
            spans = [slice(width - lengths[i], width) if left else slice(0, lengths[i]) for i in idx]
            for row, i in enumerate(idx):
                at = spans[row]
                ids[row, at] = torch.tensor(features[i]["input_ids"])
                mask[row, at] = 1
                if types is not None and features[i].get("token_type_ids") is not None:
                    types[row, at] = torch.tensor(features[i]["token_type_ids"])
            result = self.model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            fields = {name: result[name].float().numpy() for name in self.FIELDS}
            for row, i in enumerate(idx):
                out[i] = {
                    name: (arr[row, spans[row]] if self.FIELDS[name] else arr[row]).copy() for name, arr in fields.items()
                }
        return out  # type: ignore[return-value]

    def padding(self, batch_size: int) -> tuple[int, int]:
        """The id that pads a batch, and how many features a batch may hold.

        A decoder classifier reads each row at its last token that is not the config's
        ``pad_token_id`` (as transformers does): its batches are padded with that id, whatever the
        tokenizer's, and without one each feature runs alone (transformers' default too)."""
        cfg = self.model.config
        if getattr(getattr(self.model, "head", None), "takes_input_ids", False):
            return (0, 1) if cfg.pad_token_id is None else (cfg.pad_token_id, batch_size)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = cfg.pad_token_id or 0
        return pad_id, batch_size


def reads_token_types(model) -> bool:
    """Whether the model reads token types: a table of them, or XLNet's relative segments."""
    cfg = model.config
    return cfg.type_vocab_size > 0 or getattr(cfg, "xlnet", None) is not None


def model_positions(model) -> int | None:
    cfg = model.config
    usable = getattr(cfg, "usable_positions", None)
    if usable is None:
        return None
    if cfg.positions_from_padding:  # RoBERTa's positions start after the padding index
        usable -= (cfg.pad_token_id or 0) + 1
    return usable


def where(index: int | None) -> str:
    return "" if index is None else f"input {index}: "


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def tokens_to_string(tokenizer, tokens: Sequence[str]) -> str:
    """Join tokens back into text with the tokenizer's decoder (spaces where it has none)."""
    decoder = tokenizer.backend_tokenizer.decoder
    return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)


def call_each(pipe: Pipeline, inputs: list) -> list[tuple[Any, str | None]]:
    """``(result, None)`` or ``(None, error)`` for each input: all in one call, and if that fails,
    one by one, so that one bad input does not sink the others."""
    try:
        return [(value, None) for value in pipe(list(inputs))]
    except LmatlasError:
        out: list[tuple[Any, str | None]] = []
        for item in inputs:
            try:
                out.append((pipe([item])[0], None))
            except LmatlasError as e:
                out.append((None, str(e)))
        return out


def jsonable(value: Any) -> Any:
    """A result with its tensors and arrays as lists, for JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def warn(message: str) -> None:
    warnings.warn(message, stacklevel=4)
