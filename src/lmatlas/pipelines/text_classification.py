"""text-classification (sentiment-analysis): labels for a whole text, or a pair of texts."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LmatlasError
from .base import Option, Pipeline, choice, mapping, sigmoid, softmax, where

_LEGACY = "__legacy__"  # top_k not given: transformers' original one-best schema


def _top_k(name: str, value: Any) -> Any:
    if value is None or value == _LEGACY or value == "all":
        return None if value == "all" else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LmatlasError(f"{name} must be a positive integer, or None for every label, not {value!r}")
    return value


class TextClassification(Pipeline):
    """Scores of a sequence-classification head, as transformers gives them.

    Without ``top_k``, a text gives ``[{"label", "score"}]`` (its best label, in a list) and a
    list of texts one such dict per text; with ``top_k=n`` (or None for all labels), each text
    gives a list of ``{"label", "score"}`` best first. A text pair is
    ``{"text": ..., "text_pair": ...}``.

    Scores: softmax over the labels, sigmoid for a single label or a multi-label model
    (``problem_type`` multi_label_classification), the raw value for regression — or as
    ``function_to_apply`` says.
    """

    task = "text-classification"
    FIELDS = {"logits": False}
    OPTIONS = {
        "top_k": Option(_LEGACY, _top_k, "labels per text, best first ('all' or None: every label)", "int_or_all"),
        "function_to_apply": Option(
            "default", choice("default", "softmax", "sigmoid", "none"), "softmax, sigmoid or none (default: as the model says)"
        ),
        "tokenizer_kwargs": Option(None, mapping, "extra tokenizer arguments", "json"),
    }

    def check_input(self, item: Any, index: int | None) -> Any:
        if isinstance(item, str):
            return item
        if isinstance(item, dict):
            extra = set(item) - {"text", "text_pair"}
            if "text" not in item or extra or not isinstance(item["text"], str):
                raise LmatlasError(f"{where(index)}a text pair is {{'text': ..., 'text_pair': ...}}, not {item!r:.80}")
            if item.get("text_pair") is not None and not isinstance(item["text_pair"], str):
                raise LmatlasError(f"{where(index)}text_pair must be a string")
            return item
        raise LmatlasError(
            f"{where(index)}text-classification takes a text, a pair {{'text': ..., 'text_pair': ...}}, "
            f"or a list of them, not {type(item).__name__}"
        )

    def features(self, item: Any, opts: dict) -> list[dict]:
        text, pair = (item, None) if isinstance(item, str) else (item["text"], item.get("text_pair"))
        kwargs = {"truncation": True, "max_length": self.max_length(), **(opts["tokenizer_kwargs"] or {})}
        enc = self.tokenizer(text, pair, **kwargs)
        return [{"input_ids": enc["input_ids"], "token_type_ids": enc.get("token_type_ids")}]

    def postprocess(self, item: Any, features: list[dict], outputs: list[dict], opts: dict) -> Any:
        logits = outputs[0]["logits"].astype(np.float32)
        scores = apply(logits, opts["function_to_apply"], self.model.config)
        labels = self.model.config.id2label
        top_k = opts["top_k"]
        if top_k == _LEGACY:
            best = int(scores.argmax())
            return {"label": labels[best], "score": float(scores[best])}
        ranked = sorted(
            ({"label": labels[i], "score": float(s)} for i, s in enumerate(scores)), key=lambda d: d["score"], reverse=True
        )
        return ranked if top_k is None else ranked[:top_k]

    def finish(self, result: Any, opts: dict, inputs: Any) -> Any:
        # transformers wraps the one-best answer for a single string in a list (not for a pair).
        return [result] if opts["top_k"] == _LEGACY and isinstance(inputs, str) else result


def apply(logits: np.ndarray, function: str, cfg) -> np.ndarray:
    if function == "default":
        if cfg.problem_type == "regression":
            function = "none"
        elif cfg.problem_type == "multi_label_classification" or cfg.num_labels == 1:
            function = "sigmoid"
        else:
            function = "softmax"
    if function == "sigmoid":
        return sigmoid(logits)
    if function == "softmax":
        return softmax(logits)
    return logits
