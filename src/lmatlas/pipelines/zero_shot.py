"""zero-shot-classification: labels chosen at run time, through NLI or through embeddings.

With an NLI model (a sequence-classification head with an "entailment" label), each label
becomes a hypothesis — "This example is {label}." — and the text its premise; the entailment
logit says how well the label fits (Yin et al., 2019), as transformers does it.

With a sentence-embedding model (the default all-MiniLM-L6-v2), the text and each hypothesis
are embedded and compared by cosine similarity: no NLI head is needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LmatlasError
from .base import _UNSET, Option, Pipeline, boolean, softmax, string, where

# Sentence-transformers' MultipleNegativesRankingLoss (which all-MiniLM-L6-v2 was trained with)
# turns cosine similarities into a softmax over candidates after multiplying them by 20: the
# same scale makes the similarities of an embedding model into probabilities over labels.
EMBEDDING_SCALE = 20.0


def _labels(name: str, value: Any) -> list[str] | None:
    """A list of labels, or one string of comma-separated labels (as transformers takes them)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [label.strip() for label in value.split(",") if label.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise LmatlasError(f"{name} must be a list of labels or a comma-separated string, not {value!r}")
    if not value:
        raise LmatlasError(f"{name} is empty; give at least one label")
    return list(value)


def _template(name: str, value: Any) -> str:
    value = string(name, value)
    try:
        filled = value.format("x")
    except (IndexError, KeyError, ValueError):
        raise LmatlasError(f"{name} {value!r} must have exactly one {{}} where the label goes") from None
    if filled == value:
        raise LmatlasError(f"{name} {value!r} has no {{}} where the label goes, e.g. 'This example is {{}}.'")
    return value


OPTIONS = {
    "candidate_labels": Option(None, _labels, "the labels to choose from (a list, or one comma-separated string)", "str"),
    "hypothesis_template": Option("This example is {}.", _template, "how a label becomes a sentence; {} is the label"),
    "multi_label": Option(False, boolean, "score each label on its own instead of sharing 1 among them", "bool"),
}


class _ZeroShot(Pipeline):
    task = "zero-shot-classification"
    OPTIONS = OPTIONS

    def __call__(self, inputs: Any = _UNSET, candidate_labels: Any = None, **options):
        if candidate_labels is not None:
            options["candidate_labels"] = candidate_labels
        return super().__call__(inputs, **options)

    def prepare(self, opts: dict) -> None:
        if not opts["candidate_labels"]:
            raise LmatlasError("zero-shot-classification needs candidate_labels, the labels to choose from")

    def _result(self, text: str, labels: list[str], scores: np.ndarray) -> dict:
        # Best first; among equal scores the later label first (transformers' reversed argsort).
        order = list(reversed(np.argsort(scores, kind="stable")))
        return {"sequence": text, "labels": [labels[i] for i in order], "scores": [float(scores[i]) for i in order]}


class ZeroShotNLI(_ZeroShot):
    """``{"sequence", "labels", "scores"}``, labels best first.

    Scores: a softmax of the entailment logits over the labels; with ``multi_label`` (or a
    single label) each label's entailment against contradiction on its own. Like transformers,
    "contradiction" is the first label of the model (the last if entailment is the first).
    """

    FIELDS = {"logits": False}

    def __init__(self, model, tokenizer, **kwargs: Any):
        labels = model.config.id2label
        self.entailment = next((i for i, name in labels.items() if name.lower().startswith("entail")), None)
        if self.entailment is None:
            names = ", ".join(repr(v) for v in labels.values())
            raise LmatlasError(
                "zero-shot-classification needs an NLI model, with an 'entailment' label; "
                f"this model's labels are {names} (NLI checkpoints: cross-encoder/nli-distilroberta-base, "
                "typeform/distilbert-base-uncased-mnli; or use a sentence-embedding model such as the default)"
            )
        self.contradiction = len(labels) - 1 if self.entailment == 0 else 0
        super().__init__(model, tokenizer, **kwargs)

    def features(self, text: str, opts: dict) -> list[dict]:
        feats = []
        limit = self.max_length()
        for label in opts["candidate_labels"]:
            hypothesis = opts["hypothesis_template"].format(label)
            # Cut the text, never the hypothesis; if the hypothesis alone is too long, cut both.
            try:
                enc = self.tokenizer(text, hypothesis, truncation="only_first", max_length=limit)
            except LmatlasError:
                enc = self.tokenizer(text, hypothesis, truncation="longest_first", max_length=limit)
            feats.append({"input_ids": enc["input_ids"], "token_type_ids": enc.get("token_type_ids")})
        return feats

    def postprocess(self, text: str, features: list[dict], outputs: list[dict], opts: dict) -> dict:
        logits = np.stack([o["logits"] for o in outputs]).astype(np.float32)
        labels = opts["candidate_labels"]
        if opts["multi_label"] or len(labels) == 1:
            pairs = logits[:, [self.contradiction, self.entailment]]
            scores = softmax(pairs, axis=-1)[:, 1]
        else:
            scores = softmax(logits[:, self.entailment], axis=-1)
        return self._result(text, labels, scores)


class ZeroShotEmbedding(_ZeroShot):
    """``{"sequence", "labels", "scores"}`` from a sentence-embedding model.

    Scores: a softmax over the labels of 20 x the cosine similarity between the text and each
    hypothesis (the scale the model was trained with); with ``multi_label``, each label's own
    cosine similarity.
    """

    def __init__(self, encoder, task: str | None = None, batch_size: int = 8, **options: Any):
        self.encoder = encoder
        super().__init__(encoder.model, encoder.tokenizer, task=task, batch_size=batch_size, **options)

    def run(self, items: list, opts: dict, batch_size: int) -> list:
        self.prepare(opts)
        labels = opts["candidate_labels"]
        hypotheses = [opts["hypothesis_template"].format(label) for label in labels]
        vectors = self.encoder.encode(list(items) + hypotheses, batch_size=batch_size, normalize=True)
        texts, hyps = vectors[: len(items)].astype(np.float64), vectors[len(items) :].astype(np.float64)
        similarity = texts @ hyps.T
        results = []
        for text, sims in zip(items, similarity):
            scores = sims if opts["multi_label"] else softmax(EMBEDDING_SCALE * sims)
            results.append(self._result(text, labels, scores))
        return results

    def check_input(self, item: Any, index: int | None) -> Any:
        if not isinstance(item, str):
            raise LmatlasError(f"{where(index)}zero-shot-classification takes a string or a list of strings")
        return item
