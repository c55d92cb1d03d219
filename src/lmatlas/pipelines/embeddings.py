"""feature-extraction and sentence-similarity: what an encoder says about a text.

Both run on ``lmatlas.embeddings.SentenceEncoder``, so they read sentence-transformers folders
(pooling, normalisation, max_seq_length) as ``lmatlas.embed`` does; the default model serves
both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import LmatlasError
from .base import _UNSET, Option, Pipeline, boolean, mapping, where


class FeatureExtraction(Pipeline):
    """The last hidden states of a text: a nested list ``[1][tokens][hidden]``, as transformers
    gives them (a tensor with ``return_tensors=True``).

    ``pool=True`` gives the sentence embedding instead — ``[dim]`` per text, pooled and
    normalised as the model's sentence-transformers files say (mean pooling for a plain model),
    which is what ``lmatlas.embed`` and sentence-transformers' ``encode`` give.
    """

    task = "feature-extraction"
    FIELDS = {"last_hidden_state": True}
    OPTIONS = {
        "truncation": Option(False, boolean, "cut texts longer than the model can read", "bool"),
        "tokenize_kwargs": Option(None, mapping, "extra tokenizer arguments", "json"),
        "return_tensors": Option(False, boolean, "a torch tensor instead of nested lists", "bool"),
        "pool": Option(False, boolean, "one sentence embedding per text instead of one vector per token", "bool"),
    }

    def __init__(self, encoder, task: str | None = None, batch_size: int = 8, **options: Any):
        self.encoder = encoder
        super().__init__(encoder.model, encoder.tokenizer, task=task, batch_size=batch_size, **options)

    def run(self, items: list, opts: dict, batch_size: int) -> list:
        if not opts["pool"]:
            return super().run(items, opts, batch_size)
        vectors = self.encoder.encode(items, batch_size=batch_size, truncate=True)
        return [torch.from_numpy(v) if opts["return_tensors"] else v.tolist() for v in vectors]

    def features(self, text: str, opts: dict) -> list[dict]:
        kwargs = dict(opts["tokenize_kwargs"] or {})
        if "truncation" in kwargs and opts["truncation"]:
            raise LmatlasError("truncation is given twice: as an option and in tokenize_kwargs")
        kwargs.setdefault("truncation", opts["truncation"])
        if kwargs["truncation"] and "max_length" not in kwargs:
            kwargs["max_length"] = self.max_length()
        enc = self.tokenizer(text, **kwargs)
        limit = self.max_length()
        if limit is not None and len(enc["input_ids"]) > limit:
            raise LmatlasError(
                f"the text has {len(enc['input_ids'])} tokens, more than the model's {limit}; pass truncation=True"
            )
        return [{"input_ids": enc["input_ids"], "token_type_ids": enc.get("token_type_ids")}]

    def postprocess(self, text: str, features: list[dict], outputs: list[dict], opts: dict) -> Any:
        hidden = outputs[0]["last_hidden_state"][None]
        return torch.from_numpy(hidden) if opts["return_tensors"] else hidden.tolist()


class SentenceSimilarity(Pipeline):
    """Cosine similarities of ``sentences`` to ``source_sentence`` — the Hugging Face hub's
    sentence-similarity task: ``{"source_sentence": ..., "sentences": [...]}`` gives a list of
    floats, one per sentence (as sentence-transformers' ``similarity``)."""

    task = "sentence-similarity"
    OPTIONS: dict[str, Option] = {}

    def __init__(self, encoder, task: str | None = None, batch_size: int = 32, **options: Any):
        self.encoder = encoder
        super().__init__(encoder.model, encoder.tokenizer, task=task, batch_size=batch_size, **options)

    def __call__(self, inputs: Any = _UNSET, sentences: Any = None, *, batch_size=None, **options):
        if sentences is not None:
            if inputs is _UNSET or not isinstance(inputs, str):
                raise LmatlasError("with sentences=, the input is the source sentence (a string)")
            inputs = {"source_sentence": inputs, "sentences": sentences}
        return super().__call__(inputs, batch_size=batch_size, **options)

    def check_input(self, item: Any, index: int | None) -> Any:
        if not isinstance(item, dict):
            raise LmatlasError(
                f"{where(index)}sentence-similarity takes {{'source_sentence': ..., 'sentences': [...]}}, "
                f"not {type(item).__name__}"
            )
        source, sentences = item.get("source_sentence"), item.get("sentences")
        if not isinstance(source, str):
            raise LmatlasError(f"{where(index)}the input has no source_sentence (a string)")
        if isinstance(sentences, str):
            sentences = [sentences]
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) for s in sentences):
            raise LmatlasError(f"{where(index)}sentences must be a non-empty list of strings")
        return {"source_sentence": source, "sentences": sentences}

    def run(self, items: list, opts: dict, batch_size: int) -> list:
        texts = [t for item in items for t in [item["source_sentence"], *item["sentences"]]]
        vectors = self.encoder.encode(texts, batch_size=batch_size).astype(np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        results, at = [], 0
        for item in items:
            n = len(item["sentences"])
            results.append([float(x) for x in vectors[at + 1 : at + 1 + n] @ vectors[at]])
            at += 1 + n
        return results
