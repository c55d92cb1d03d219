"""Re-scoring search hits with a cross-encoder: a sequence-classification model with one output
that reads the question and a passage together, as sentence-transformers' ``CrossEncoder`` runs
it. It is the text-classification pipeline on ``{"text": question, "text_pair": passage}``, with
CrossEncoder's activation: a sigmoid for one label, unless the checkpoint's config names
another (``sentence_transformers.activation_fn``: Identity or Sigmoid)."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from .errors import LmatlasError

_ACTIVATIONS = {"torch.nn.modules.linear.Identity": "none", "torch.nn.modules.activation.Sigmoid": "sigmoid"}


@functools.lru_cache(maxsize=2)
def cross_encoder(model: str):
    """The pipeline and the activation for ``model`` (loaded once per process)."""
    from .pipelines import pipeline

    pipe = pipeline("text-classification", model)
    cfg = pipe.model.config
    if cfg.num_labels != 1:
        raise LmatlasError(f"--rerank {model}: a cross-encoder has one output, this model has {cfg.num_labels} labels")
    from .checkpoint import resolve
    from .files import read_json

    activation = "sigmoid"
    st = read_json(resolve(model) / "config.json").get("sentence_transformers")
    name = st.get("activation_fn") if isinstance(st, dict) else None
    if name is not None:
        if name not in _ACTIVATIONS:
            raise LmatlasError(f"--rerank {model}: the activation {name} is not supported (Identity and Sigmoid are)")
        activation = _ACTIVATIONS[name]
    return pipe, activation


def scores(model: str, question: str, passages: list[str], batch_size: int = 16) -> list[float]:
    """The cross-encoder's score of each (question, passage) pair, as ``CrossEncoder.predict``."""
    pipe, activation = cross_encoder(str(model))
    pairs = [{"text": question, "text_pair": p} for p in passages]
    out: Any = pipe(pairs, batch_size=batch_size, function_to_apply=activation, top_k=1)
    return [float(r[0]["score"]) for r in out]


def rerank(model: str, question: str, hits: list) -> list:
    """``hits`` re-scored by the cross-encoder and sorted by the new score, best first."""
    if not hits:
        return hits
    new = scores(model, question, [h.text for h in hits])
    order = sorted(range(len(hits)), key=lambda i: -new[i])
    return [replace(hits[i], score=new[i]) for i in order]
