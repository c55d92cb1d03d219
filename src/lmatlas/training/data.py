"""Training data: token streams cut into blocks, labelled examples, and the samplers that walk
them reproducibly, sharded across processes.

A sampler draws the *global* batch (all processes' examples) from its own seeded generator
and each process keeps its slice; so N processes with batch B/N see exactly the examples one
process with batch B sees, and the sampler's state (a generator state, or an epoch and a
position) is all a checkpoint needs to resume the data where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import LmatlasError
from ..files import read_text
from .fields import FieldError
from .tokenizer_trainer import read_texts


# ---------------------------------------------------------------------------------------------
# Token streams
# ---------------------------------------------------------------------------------------------


@dataclass
class TokenStream:
    """A corpus as one long sequence of ids, with where each word starts (for whole-word
    masking), as nanoGPT keeps its ``train.bin``."""

    ids: torch.Tensor  # (n,) int64
    word_starts: torch.Tensor  # (n,) bool

    def __len__(self) -> int:
        return len(self.ids)

    def split(self, fraction: float) -> tuple["TokenStream", "TokenStream"]:
        """The first ``1 - fraction`` and the last ``fraction`` of the stream (train, validation)."""
        cut = int(len(self) * (1 - fraction))
        return (TokenStream(self.ids[:cut], self.word_starts[:cut]),
                TokenStream(self.ids[cut:], self.word_starts[cut:]))


class PhraseUnits:
    """ERNIE's knowledge masking units: the phrases and named entities of a list, found in the
    text word by word, so that masking takes each of them whole (as whole-word masking takes a
    word's pieces) and the model must know the phrase, not just complete its last piece.

    Words are the tokenizer's own (its pre-tokenizer's), compared without case; where several
    phrases start at a word, the longest wins."""

    def __init__(self, tokenizer, phrases: Sequence[str]):
        self.table: set[tuple[str, ...]] = set()
        phrases = [p.strip() for p in phrases if p.strip()]
        for phrase, enc in zip(phrases, tokenizer(phrases, add_special_tokens=False).encodings):
            words = _words(enc, phrase)
            if len(words) > 1:  # a one-word entity is a whole word already
                self.table.add(tuple(words))
        self.longest = max((len(p) for p in self.table), default=0)

    def continued(self, words: list[str]) -> set[int]:
        """The indices of the words that continue a phrase (not its first word)."""
        inner: set[int] = set()
        i = 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 1, -1):
                if tuple(words[i : i + n]) in self.table:
                    inner.update(range(i + 1, i + n))
                    i += n
                    break
            else:
                i += 1
        return inner


def _words(encoding, text: str) -> list[str]:
    """The words of ``text``'s encoding, lowercased: the spans of the tokenizer's word ids."""
    spans: dict[int, list[int]] = {}
    for w, (a, b) in zip(encoding.word_ids, encoding.offsets):
        if w is not None:
            spans.setdefault(w, [a, b])[1] = b
    return [text[a:b].lower() for a, b in spans.values()]


def tokenize_stream(tokenizer, texts: Sequence[str], separator_id: int | None = None,
                    units: PhraseUnits | None = None) -> TokenStream:
    """All ``texts`` (documents) encoded without special tokens and concatenated, with
    ``separator_id`` (GPT-2's <|endoftext|>) between documents when given. ``units``: phrases
    whose words count as one word for whole-word masking (ERNIE)."""
    ids: list[int] = []
    starts: list[bool] = []
    for d, text in enumerate(texts):
        if d and separator_id is not None:
            ids.append(separator_id)
            starts.append(True)
        lines = text.splitlines(keepends=True)
        for chunk in range(0, len(lines), 4096):
            batch = lines[chunk : chunk + 4096]
            enc = tokenizer(batch, add_special_tokens=False)
            for line, e in zip(batch, enc.encodings):
                ids.extend(e.ids)
                inner = units.continued(_words(e, line)) if units is not None and units.longest else ()
                previous = None
                for w in e.word_ids:
                    starts.append(w is None or (w != previous and w not in inner))
                    previous = w
    return TokenStream(torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.bool))


def load_stream(tokenizer, files: Sequence[str | os.PathLike], separator_id: int | None = None,
                units: PhraseUnits | None = None) -> TokenStream:
    return tokenize_stream(tokenizer, read_texts(files), separator_id, units)


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------


def rank_slice(global_batch: torch.Tensor | list, rank: int, world: int):
    n = len(global_batch)
    per = n // world
    return global_batch[rank * per : (rank + 1) * per]


class WindowSampler:
    """Random block offsets into a stream, as nanoGPT's ``get_batch`` draws them."""

    def __init__(self, num_tokens: int, window: int, seed: int):
        self.high = num_tokens - window + 1
        if self.high < 1:
            raise ValueError("stream shorter than one window")
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self, n: int) -> torch.Tensor:
        return torch.randint(self.high, (n,), generator=self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class EpochSampler:
    """Indices of ``n`` examples, shuffled anew each epoch (from ``seed`` and the epoch number,
    so that the position alone restores it), walked in order across epochs."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, lengths: Sequence[int] | None = None,
                 group: int = 1024):
        if n < 1:
            raise ValueError("no examples")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.lengths, self.group = lengths, group
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        if self.lengths is not None:
            # Group by length (transformers' group_by_length): within each run of ``group``
            # shuffled examples, longest first, so that a batch pads little.
            order = [i for k in range(0, self.n, self.group)
                     for i in sorted(order[k : k + self.group], key=lambda j: -self.lengths[j])]
        return order

    def draw(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.position == self.n:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            take = min(k - len(out), self.n - self.position)
            out.extend(self._order[self.position : self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()


def windows(stream: TokenStream, offsets: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, word_starts) of the windows of ``length`` tokens starting at ``offsets``."""
    index = offsets[:, None] + torch.arange(length)[None, :]
    return stream.ids[index], stream.word_starts[index]


def tiled_offsets(num_tokens: int, length: int, stride: int | None = None, at_most: int | None = None) -> torch.Tensor:
    """Non-overlapping (or ``stride``-spaced) window offsets covering a stream: the evaluation
    windows, the same at every evaluation; ``at_most`` of them, spread evenly, when given."""
    stride = stride or length
    offsets = torch.arange(0, num_tokens - length + 1, stride)
    if at_most:
        offsets = offsets[torch.linspace(0, len(offsets) - 1, min(at_most, len(offsets))).long()]
    return offsets


def check_stream(stream: TokenStream, length: int, what: str, files: Sequence[str | os.PathLike],
                 vocab_size: int) -> None:
    """A stream holds at least one window of ``length`` tokens, all inside the vocabulary."""
    if len(stream) < length:
        raise FieldError(lambda f: f"{', '.join(map(str, files))}: the {what} has {len(stream)} tokens, fewer than "
                                   f"one block of {length}; give more text or a smaller {f('block')}")
    if len(stream) and int(stream.ids.max()) >= vocab_size:
        raise LmatlasError(f"token id {int(stream.ids.max())} of the data is outside the model's vocabulary of {vocab_size}")


# ---------------------------------------------------------------------------------------------
# Labelled examples: TSV, CSV, JSON Lines, CoNLL, SQuAD
# ---------------------------------------------------------------------------------------------


def read_table(path: str | os.PathLike, fmt: str | None = None) -> list[dict[str, Any]]:
    """Rows of a TSV, CSV (with a header line) or JSON Lines file, as dicts.

    The format follows the extension (.tsv, .csv, .jsonl/.json) unless ``fmt`` names it.
    """
    text = read_text(path, exact=True)
    fmt = fmt or {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(Path(path).suffix.lower())
    if fmt is None:
        raise FieldError(lambda f: f"{path}: cannot tell the format from the extension; use .tsv, .csv or .jsonl "
                                   f"(or {f('format')})")
    rows: list[dict[str, Any]] = []
    if fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LmatlasError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise LmatlasError(f"{path}, line {n}: expected a JSON object per line")
            rows.append(row)
    elif fmt in ("tsv", "csv"):
        # TSV rows are split on tabs only: quotes are text (SST-2 has unbalanced ones).
        if fmt == "tsv":
            lines = [line.split("\t") for line in text.splitlines()]
        else:
            lines = list(csv.reader(io.StringIO(text)))
        lines = [line for line in lines if any(c.strip() for c in line)]
        if not lines:
            raise LmatlasError(f"{path}: no rows")
        header = [h.strip() for h in lines[0]]
        for n, line in enumerate(lines[1:], 2):
            if len(line) != len(header):
                raise LmatlasError(f"{path}, line {n}: {len(line)} columns, but the header has {len(header)}")
            rows.append(dict(zip(header, line)))
    else:
        raise LmatlasError(f"unknown format {fmt!r}; use tsv, csv or jsonl")
    if not rows:
        raise LmatlasError(f"{path}: no rows")
    return rows


def column(rows: list[dict[str, Any]], name: str, path: str | os.PathLike, field: str) -> list[Any]:
    """The values of column ``name`` (which the setting ``field`` chose) in every row."""
    if name not in rows[0]:
        raise FieldError(lambda f: f"{path}: no column {name!r} (columns: {', '.join(map(str, rows[0]))}); "
                                   f"set {f(field)}")
    out = []
    for n, row in enumerate(rows):
        if name not in row or row[name] is None:
            raise LmatlasError(f"{path}: row {n + 1} has no {name!r}")
        out.append(row[name])
    return out


def read_conll(path: str | os.PathLike) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL file: one token per line with its tag in the last column, sentences
    separated by blank lines; ``-DOCSTART-`` lines are skipped."""
    text = read_text(path, exact=True)
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    columns: tuple[int, int] | None = None  # (the first token line, its number of columns)
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        if len(parts) < 2:
            raise LmatlasError(f"{path}, line {n}: expected a token and a tag, found {line.strip()!r}")
        # CoNLL has the same columns on every line; a table of sentences (TSV, CSV) has not.
        if columns is None:
            columns = (n, len(parts))
        elif len(parts) != columns[1]:
            raise LmatlasError(
                f"{path}, line {n}: {len(parts)} columns where line {columns[0]} has {columns[1]}; this is not a "
                "CoNLL file (a token per line, its tag in the last column, blank lines between sentences)"
            )
        words.append(parts[0])
        tags.append(parts[-1])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise LmatlasError(f"{path}: no sentences")
    return sentences


def read_squad(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Questions of a SQuAD JSON file (v1.1 or v2.0): id, context, question, answers
    (texts and character starts; empty for an unanswerable v2.0 question)."""
    text = read_text(path, exact=True)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LmatlasError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise LmatlasError(f"{path}: not a SQuAD file (no top-level 'data' list)")
    out = []
    try:
        for article in data["data"]:
            for para in article["paragraphs"]:
                context = para["context"]
                for qa in para["qas"]:
                    answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                    out.append({
                        "id": str(qa["id"]), "context": context, "question": qa["question"],
                        "answers": {"text": [a["text"] for a in answers],
                                    "answer_start": [int(a["answer_start"]) for a in answers]},
                    })
    except (KeyError, TypeError) as e:
        raise LmatlasError(f"{path}: not a SQuAD file (missing {e})") from None
    if not out:
        raise LmatlasError(f"{path}: no questions")
    return out


__all__ = [
    "EpochSampler",
    "PhraseUnits",
    "TokenStream",
    "WindowSampler",
    "column",
    "load_stream",
    "rank_slice",
    "read_conll",
    "read_squad",
    "read_table",
    "tiled_offsets",
    "tokenize_stream",
    "windows",
]
