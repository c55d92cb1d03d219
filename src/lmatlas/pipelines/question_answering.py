"""question-answering: the span of a context that answers a question (extractive QA, SQuAD)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LmatlasError
from .base import _UNSET, Option, Pipeline, boolean, optional_positive_int, positive_int, softmax, where


def _doc_stride(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LmatlasError(f"{name} must be a non-negative integer, not {value!r}")
    return value


class QuestionAnswering(Pipeline):
    """``{"score", "start", "end", "answer"}`` for a ``{"question", "context"}``; a list of them,
    best first, with ``top_k`` > 1.

    A context too long for the model is read in windows of ``max_seq_len`` tokens that overlap
    by ``doc_stride``; each window scores its spans on its own (start and end probabilities
    over the context tokens, the span's score their product, at most ``max_answer_len`` tokens
    long), and an answer found in several windows adds up its scores. With
    ``handle_impossible_answer`` the empty answer competes too, scored by the first token's
    start and end probabilities (in the window where they are lowest). ``start`` and ``end``
    index characters of the context, widened to whole words with ``align_to_words``.
    """

    task = "question-answering"
    FIELDS = {"start_logits": True, "end_logits": True}
    OPTIONS = {
        "top_k": Option(1, positive_int, "how many answers, best first", "int"),
        "doc_stride": Option(None, _doc_stride, "overlap in tokens of the windows over a long context (default: half a window, at most 128)", "int"),
        "max_answer_len": Option(15, positive_int, "longest answer, in tokens", "int"),
        "max_seq_len": Option(None, optional_positive_int, "tokens per window, question included (default 384, or the model's limit)", "int"),
        "max_question_len": Option(64, positive_int, "accepted for compatibility; as in transformers with a fast tokenizer, questions are not cut", "int"),
        "handle_impossible_answer": Option(False, boolean, "let the empty answer (no answer in the context) compete", "bool"),
        "align_to_words": Option(True, boolean, "widen answers to whole words", "bool"),
    }

    def __call__(self, inputs: Any = _UNSET, *, question=None, context=None, batch_size=None, **options):
        if inputs is _UNSET or isinstance(inputs, str):
            if inputs is not _UNSET:
                if question is not None:
                    raise LmatlasError("give the question once: as the input or as question=, not both")
                question = inputs
            if question is None:
                raise LmatlasError("question-answering needs a question and a context")
            if isinstance(question, list):
                contexts = context if isinstance(context, list) else [context] * len(question)
                if len(contexts) != len(question):
                    raise LmatlasError(f"{len(question)} questions but {len(contexts)} contexts")
                inputs = [{"question": q, "context": c} for q, c in zip(question, contexts)]
            else:
                inputs = {"question": question, "context": context}
        elif question is not None or context is not None:
            raise LmatlasError("give the questions and contexts either as inputs or as question= and context=")
        return super().__call__(inputs, batch_size=batch_size, **options)

    def check_input(self, item: Any, index: int | None) -> Any:
        if not isinstance(item, dict):
            raise LmatlasError(
                f"{where(index)}question-answering takes {{'question': ..., 'context': ...}}, not {type(item).__name__}"
            )
        for key in ("question", "context"):
            value = item.get(key)
            if value is None:
                raise LmatlasError(f"{where(index)}the input has no {key}; question-answering needs a question and a context")
            if not isinstance(value, str):
                raise LmatlasError(f"{where(index)}{key} must be a string, not {type(value).__name__}")
            if not value.strip():
                raise LmatlasError(f"{where(index)}the {key} is empty")
        return item

    def _window(self, opts: dict) -> tuple[int, int]:
        max_seq_len = opts["max_seq_len"]
        if max_seq_len is None:
            max_seq_len = min(self.tokenizer.model_max_length, 384)
        limit = self.max_length()
        if limit is not None and max_seq_len > limit:
            max_seq_len = limit
        stride = opts["doc_stride"]
        if stride is None:
            stride = min(max_seq_len // 2, 128)
        if stride > max_seq_len:
            raise LmatlasError(f"doc_stride ({stride}) is larger than max_seq_len ({max_seq_len})")
        return max_seq_len, stride

    def features(self, item: dict, opts: dict) -> list[dict]:
        max_seq_len, stride = self._window(opts)
        # Question first unless the tokenizer pads on the left (then the context comes first).
        question_first = self.tokenizer.padding_side == "right"
        first, second = (item["question"], item["context"]) if question_first else (item["context"], item["question"])
        try:
            enc = self.tokenizer(
                first,
                second,
                truncation="only_second" if question_first else "only_first",
                max_length=max_seq_len,
                stride=stride,
                return_token_type_ids=True,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
        except LmatlasError:
            raise LmatlasError(
                f"the question does not leave room for the context in windows of max_seq_len={max_seq_len} tokens "
                f"overlapping by doc_stride={stride}; shorten the question, or lower doc_stride"
            ) from None
        cls = self.tokenizer.cls_token_id
        feats = []
        for i, encoding in enumerate(enc.encodings):
            ids = enc["input_ids"][i]
            # Answers come from the context; the [CLS] token stands for "no answer".
            if question_first:
                allowed = [s == 1 for s in encoding.sequence_ids]
            else:
                allowed = [True] * len(ids)
            if cls is not None:
                allowed = [a or t == cls for a, t in zip(allowed, ids)]
            feats.append(
                {
                    "input_ids": ids,
                    "token_type_ids": enc["token_type_ids"][i],
                    "allowed": np.array(allowed),
                    "encoding": encoding,
                    "sequence_index": 1 if question_first else 0,
                }
            )
        return feats

    def postprocess(self, item: dict, features: list[dict], outputs: list[dict], opts: dict) -> Any:
        top_k, impossible = opts["top_k"], opts["handle_impossible_answer"]
        # Words may merge candidates, so look at more spans than asked for.
        candidates = top_k * 2 + 10 if opts["align_to_words"] else top_k
        context = item["context"]
        answers: list[dict] = []
        null_score = 1e6
        for feat, out in zip(features, outputs):
            spans, null = _best_spans(
                out["start_logits"], out["end_logits"], feat["allowed"], candidates, opts["max_answer_len"]
            )
            null_score = min(null_score, null)
            for s, e, score in spans:
                start, end = _char_span(feat["encoding"], s, e, feat["sequence_index"], opts["align_to_words"])
                text = context[start:end]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:  # found again (another window, or another span of the same words)
                    same["score"] += score
                else:
                    answers.append({"score": score, "start": start, "end": end, "answer": text})
        if impossible:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if top_k == 1 and answers else answers


def _best_spans(start_logits, end_logits, allowed, k: int, max_answer_len: int):
    """The k likeliest (start, end, score) spans of one window, and the empty answer's score."""
    start = softmax(np.where(allowed, start_logits, -10000.0).astype(np.float32))
    end = softmax(np.where(allowed, end_logits, -10000.0).astype(np.float32))
    null = float(start[0] * end[0])
    start[0] = end[0] = 0.0  # the first token is not an answer; it stood for "none" above
    # score[s, e] = P(start = s) P(end = e), for s <= e < s + max_answer_len
    scores = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)
    flat = scores.ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    spans = []
    for index in order:
        if flat[index] <= 0.0:
            break
        s, e = divmod(int(index), scores.shape[1])
        if allowed[s] and allowed[e]:
            spans.append((s, e, float(flat[index])))
    return spans, null


def _char_span(encoding, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    if align_to_words:
        first, last = encoding.token_to_word(s), encoding.token_to_word(e)
        if first is not None and last is not None:
            start = encoding.word_to_chars(first, sequence_index)
            end = encoding.word_to_chars(last, sequence_index)
            if start is not None and end is not None:
                return start[0], end[1]
    return encoding.offsets[s][0], encoding.offsets[e][1]
