"""token-classification (ner): a label for every token, or entities grouped from them."""

from __future__ import annotations

import numpy as np

from ..errors import LmatlasError
from .base import Option, Pipeline, choice, optional_positive_int, softmax, strings, tokens_to_string, warn

STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassification(Pipeline):
    """Entities of a token-classification head, in transformers' schema.

    ``aggregation_strategy="none"``: one ``{"entity", "score", "index", "word", "start", "end"}``
    per token whose label is not ignored. Otherwise ``{"entity_group", "score", "word", "start",
    "end"}`` per entity: "simple" joins neighbouring tokens with the same tag (B- opens a new
    entity); "first", "average" and "max" first make every word take one label — its first
    token's, the average of its tokens' scores, or its most confident token's.

    Subwords are recognised by the WordPiece continuation prefix (##); tokenizers without one
    fall back on "no space before the token", with a warning, as in transformers.
    ``stride`` runs texts longer than the model in overlapping windows and keeps, where two
    entities overlap, the longer (or the more confident) one.
    """

    task = "token-classification"
    OPTIONS = {
        "aggregation_strategy": Option("none", choice(*STRATEGIES), "none, simple, first, average or max"),
        "ignore_labels": Option(["O"], strings, "labels to leave out (default O)", "list"),
        "stride": Option(None, optional_positive_int, "overlap in tokens between windows over a long text", "int"),
    }

    def prepare(self, opts: dict) -> None:
        if opts["stride"] is not None:
            limit = self.max_length()
            if limit is None or opts["stride"] >= limit:
                raise LmatlasError(f"stride must be less than the model's {limit} tokens, not {opts['stride']}")
            if opts["aggregation_strategy"] == "none":
                raise LmatlasError('stride needs an aggregation_strategy other than "none"')
        self._subword_prefix = getattr(self.tokenizer.backend_tokenizer.model, "continuing_subword_prefix", None)
        if not self._subword_prefix and opts["aggregation_strategy"] in ("first", "average", "max"):
            warn(
                f"the tokenizer marks no subwords, so aggregation_strategy={opts['aggregation_strategy']!r} "
                "guesses words from spaces"
            )

    def features(self, text: str, opts: dict) -> list[dict]:
        limit = self.max_length()
        stride = opts["stride"]
        enc = self.tokenizer(
            text,
            truncation=limit is not None,
            max_length=limit,
            stride=stride or 0,
            return_overflowing_tokens=stride is not None,
            return_special_tokens_mask=True,
            return_offsets_mapping=True,
        )
        rows = len(enc["input_ids"]) if stride is not None else 1
        pick = (lambda key, i: enc[key][i]) if stride is not None else (lambda key, i: enc[key])
        return [
            {
                "input_ids": pick("input_ids", i),
                "token_type_ids": pick("token_type_ids", i) if "token_type_ids" in enc else None,
                "special": pick("special_tokens_mask", i),
                "offsets": pick("offset_mapping", i),
            }
            for i in range(rows)
        ]

    def postprocess(self, text: str, features: list[dict], outputs: list[dict], opts: dict) -> list[dict]:
        strategy = opts["aggregation_strategy"]
        ignore = set(opts["ignore_labels"] or [])
        entities = []
        for feat, out in zip(features, outputs):
            scores = softmax(out["logits"].astype(np.float32))
            tokens = self._tokens(text, feat, scores)
            if strategy == "none":
                grouped = [self._token_entity(t) for t in tokens]
            elif strategy == "simple":
                grouped = self._group([self._token_entity(t) for t in tokens])
            else:
                grouped = self._group([self._word_entity(word, strategy) for word in _words(tokens)])
            key = "entity" if strategy == "none" else "entity_group"
            entities += [e for e in grouped if e[key] not in ignore]
        if len(features) > 1:
            entities = _resolve_overlaps(entities)
        return entities

    # -- tokens, words, entities --------------------------------------------------------------

    def _tokens(self, text: str, feat: dict, scores: np.ndarray) -> list[dict]:
        out = []
        unk = self.tokenizer.unk_token_id
        for idx, (token_id, special) in enumerate(zip(feat["input_ids"], feat["special"])):
            if special:
                continue
            start, end = feat["offsets"][idx]
            word = self.tokenizer.convert_ids_to_tokens(int(token_id))
            surface = text[start:end]
            if self._subword_prefix:
                # A continuation piece (##ing) is longer or shorter than its text.
                is_subword = len(word) != len(surface)
            else:
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            if token_id == unk:
                word, is_subword = surface, False
            out.append({"word": word, "scores": scores[idx], "start": start, "end": end, "index": idx, "is_subword": is_subword})
        return out

    def _token_entity(self, token: dict) -> dict:
        best = int(token["scores"].argmax())
        return {
            "entity": self.model.config.id2label[best],
            "score": float(token["scores"][best]),
            "index": token["index"],
            "word": token["word"],
            "start": token["start"],
            "end": token["end"],
        }

    def _word_entity(self, tokens: list[dict], strategy: str) -> dict:
        if strategy == "first":
            scores = tokens[0]["scores"]
        elif strategy == "max":
            scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
        best = int(scores.argmax())
        return {
            "entity": self.model.config.id2label[best],
            "score": float(scores[best]),
            "word": tokens_to_string(self.tokenizer, [t["word"] for t in tokens]),
            "start": tokens[0]["start"],
            "end": tokens[-1]["end"],
        }

    def _group(self, entities: list[dict]) -> list[dict]:
        """Neighbouring entities with the same tag form one group; a B- tag starts a new one."""
        groups: list[list[dict]] = []
        for e in entities:
            bi, tag = _tag(e["entity"])
            if groups and bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(e)
            else:
                groups.append([e])
        return [
            {
                "entity_group": group[0]["entity"].split("-", 1)[-1],
                "score": float(np.nanmean([e["score"] for e in group])),
                "word": tokens_to_string(self.tokenizer, [e["word"] for e in group]),
                "start": group[0]["start"],
                "end": group[-1]["end"],
            }
            for group in groups
        ]


def _tag(label: str) -> tuple[str, str]:
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def _words(tokens: list[dict]) -> list[list[dict]]:
    words: list[list[dict]] = []
    for t in tokens:
        if words and t["is_subword"]:
            words[-1].append(t)
        else:
            words.append([t])
    return words


def _resolve_overlaps(entities: list[dict]) -> list[dict]:
    """Windows overlap: of entities that start inside another, keep the longer, then the surer."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    kept, current = [], entities[0]
    for e in entities:
        if current["start"] <= e["start"] < current["end"]:
            longer = e["end"] - e["start"] > current["end"] - current["start"]
            same = e["end"] - e["start"] == current["end"] - current["start"]
            if longer or (same and e["score"] > current["score"]):
                current = e
        else:
            kept.append(current)
            current = e
    kept.append(current)
    return kept
