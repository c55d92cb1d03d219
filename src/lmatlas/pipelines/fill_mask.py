"""fill-mask: the likeliest tokens for each mask token of a text (BERT's pre-training task)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import LmatlasError
from .base import Option, Pipeline, mapping, positive_int, strings, warn


class FillMask(Pipeline):
    """``[{"score", "token", "token_str", "sequence"}, ...]`` best first, for a text with one
    mask; a list of such lists (one per mask, in order) for a text with several.

    With several masks each list scores its position alone, given the text with the other masks
    still masked — not a joint guess, as in transformers.
    """

    task = "fill-mask"
    OPTIONS = {
        "top_k": Option(5, positive_int, "how many tokens to propose per mask", "int"),
        "targets": Option(
            None, strings, "score only these tokens (a word outside the vocabulary stands for its first token)", "list"
        ),
        "tokenizer_kwargs": Option(None, mapping, "extra tokenizer arguments, e.g. {'truncation': True}", "json"),
    }

    def __init__(self, model, tokenizer, **kwargs: Any):
        if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
            raise LmatlasError(f"fill-mask needs a tokenizer with a mask token; {tokenizer.name_or_path} has none")
        super().__init__(model, tokenizer, **kwargs)

    def prepare(self, opts: dict) -> None:
        opts["_target_ids"] = None if opts["targets"] is None else self._target_ids(opts["targets"])

    def _target_ids(self, targets: list[str]) -> np.ndarray:
        vocab = self.tokenizer.get_vocab()
        ids: list[int] = []
        for target in targets:
            if target in vocab:
                ids.append(vocab[target])
                continue
            # Not a token: stand in its first token, as transformers does (and say so).
            first = self.tokenizer(target, add_special_tokens=False, truncation=True, max_length=1)["input_ids"]
            if not first:
                warn(f"target {target!r} is not in the vocabulary and gives no token; it is ignored")
                continue
            warn(
                f"target {target!r} is not in the vocabulary; "
                f"its first token {self.tokenizer.convert_ids_to_tokens(first[0])!r} stands in for it"
            )
            ids.append(first[0])
        ids = sorted(set(ids))
        if not ids:
            raise LmatlasError("targets: none of the targets gives a token")
        return np.array(ids)

    def features(self, text: str, opts: dict) -> list[dict]:
        kwargs = dict(opts["tokenizer_kwargs"] or {})
        if kwargs.get("truncation") and "max_length" not in kwargs:
            kwargs["max_length"] = self.max_length()
        try:
            enc = self.tokenizer(text, **kwargs)
        except TypeError as e:
            raise LmatlasError(f"tokenizer_kwargs: {e}") from None
        ids = enc["input_ids"]
        masks = [i for i, t in enumerate(ids) if t == self.tokenizer.mask_token_id]
        if not masks:
            raise LmatlasError(
                f"no mask token {self.tokenizer.mask_token} in the text; put {self.tokenizer.mask_token} "
                "where a token should be predicted"
            )
        limit = self.max_length()
        if limit is not None and len(ids) > limit:
            raise LmatlasError(
                f"the text has {len(ids)} tokens, more than the model's {limit}; "
                "shorten it or pass tokenizer_kwargs={'truncation': True}"
            )
        return [{"input_ids": ids, "token_type_ids": enc.get("token_type_ids"), "masks": masks}]

    def postprocess(self, text: str, features: list[dict], outputs: list[dict], opts: dict) -> Any:
        feat, logits = features[0], outputs[0]["logits"]
        targets = opts["_target_ids"]
        # Softmax over the whole vocabulary, then (with targets) keep the targets' shares.
        probs = torch.from_numpy(logits[feat["masks"]]).softmax(dim=-1)
        if targets is not None:
            probs = probs[:, torch.from_numpy(targets)]
        k = min(opts["top_k"], probs.shape[-1])
        values, positions = probs.topk(k)
        single = len(feat["masks"]) == 1
        pad = self.tokenizer.pad_token_id
        rows = []
        for m, (vals, pos) in enumerate(zip(values.tolist(), positions.tolist())):
            row = []
            for v, p in zip(vals, pos):
                token = int(targets[p]) if targets is not None else p
                ids = list(feat["input_ids"])
                ids[feat["masks"][m]] = token
                ids = [t for t in ids if t != pad]
                # With several masks the others stay visible in the sequence (as transformers).
                sequence = self.tokenizer.decode(ids, skip_special_tokens=single)
                row.append(
                    {"score": v, "token": token, "token_str": self.tokenizer.decode([token]), "sequence": sequence}
                )
            rows.append(row)
        return rows[0] if single else rows
