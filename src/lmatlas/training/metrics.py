"""The metrics people report for each fine-tuning task.

- classification: accuracy, and F1 (binary: of the positive class; more classes: macro);
- NER: entity-level precision, recall and F1 over BIO chunks (conlleval, seqeval's default);
- extractive QA: exact match and token F1 after SQuAD's answer normalisation;
- sequence to sequence: ROUGE-L (F-measure of the longest common subsequence).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    return sum(p == y for p, y in zip(predictions, labels)) / max(len(labels), 1)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> float:
    """Binary: F1 of class 1 (as GLUE reports for MRPC, QQP); more classes: macro F1."""
    scores = []
    for c in range(num_labels):
        tp = sum(p == c and y == c for p, y in zip(predictions, labels))
        fp = sum(p == c and y != c for p, y in zip(predictions, labels))
        fn = sum(p != c and y == c for p, y in zip(predictions, labels))
        scores.append(_f1(tp, fp, fn))
    return scores[1] if num_labels == 2 else sum(scores) / max(len(scores), 1)


# ---------------------------------------------------------------------------------------------
# NER
# ---------------------------------------------------------------------------------------------


def chunks(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entities (type, start, end) of a BIO tag sequence; an I- after O or after another type
    opens an entity, as conlleval does."""
    out: set[tuple[str, int, int]] = set()
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, label = tag.partition("-") if tag not in ("O", "") else ("O", "", "")
        if prefix in ("B", "S") or prefix == "O" or (prefix in ("I", "E") and label != kind):
            if kind is not None:
                out.add((kind, start, i))
            kind, start = (label, i) if prefix != "O" else (None, i)
    return out


def entity_scores(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    tp = fp = fn = 0
    for p, g in zip(predicted, gold):
        pc, gc = chunks(p), chunks(g)
        tp += len(pc & gc)
        fp += len(pc - gc)
        fn += len(gc - pc)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": precision, "recall": recall, "f1": _f1(tp, fp, fn)}


# ---------------------------------------------------------------------------------------------
# Extractive QA (the official SQuAD evaluation script's normalisation)
# ---------------------------------------------------------------------------------------------


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, truths: Sequence[str]) -> float:
    truths = list(truths) or [""]
    return max(float(normalize_answer(prediction) == normalize_answer(t)) for t in truths)


def token_f1(prediction: str, truths: Sequence[str]) -> float:
    def one(pred: str, truth: str) -> float:
        p, t = normalize_answer(pred).split(), normalize_answer(truth).split()
        if not p or not t:
            return float(p == t)
        common = sum((Counter(p) & Counter(t)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(t)
        return 2 * precision * recall / (precision + recall)

    truths = list(truths) or [""]
    return max(one(prediction, t) for t in truths)


# ---------------------------------------------------------------------------------------------
# Sequence to sequence
# ---------------------------------------------------------------------------------------------


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure over lower-cased word tokens (as ``rouge_score`` without stemming)."""
    p = re.findall(r"[a-z0-9]+", prediction.lower())
    r = re.findall(r"[a-z0-9]+", reference.lower())
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


__all__ = ["accuracy", "chunks", "entity_scores", "exact_match", "f1", "normalize_answer", "rouge_l", "token_f1"]
