"""XLNet's task heads (the others it shares: ``heads.CausalLMHead``, ``TokenClassificationHead``,
``QuestionAnsweringHead``).

- ``SequenceSummary``: one vector for a whole sequence — the last token's state (XLNet's
  tokenizer puts <cls> last and pads on the left), the first, or the mean — optionally through a
  dense layer and an activation; the classification and multiple-choice heads read it.
- ``BeamQuestionAnsweringHead``: SQuAD 2.0's span search with a beam (XLNet's
  ``ForQuestionAnswering``): the ``start_n_top`` likeliest starts, for each the ``end_n_top``
  likeliest ends scored given that start, and whether the question has an answer at all,
  scored from the <cls> state and the expected start state. Trained on the labelled span (and
  answerability), it returns the loss instead.

Each head's ``INPUTS`` are the arguments it takes beside the stack's output (the model's
forward passes them on, ``xlnet.forward``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import activation
from .config import ModelConfig
from .errors import LmatlasError


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class SequenceSummary(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s = cfg.xlnet
        if s is None:
            raise LmatlasError("a sequence summary needs the config's xlnet settings")
        self.kind = s.summary_type
        width = cfg.num_labels if s.summary_proj_to_labels and cfg.num_labels > 0 else cfg.hidden_size
        self.dense = nn.Linear(cfg.hidden_size, width) if s.summary_use_proj else None
        self.act = activation(s.summary_activation) if s.summary_activation else _identity
        self.first_dropout = nn.Dropout(s.summary_first_dropout)
        self.last_dropout = nn.Dropout(s.summary_last_dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # "cls_index" without an index (XLNet's heads pass none) is the last token too.
        x = {"first": lambda: h[:, 0], "mean": lambda: h.mean(dim=1)}.get(self.kind, lambda: h[:, -1])()
        x = self.first_dropout(x)
        if self.dense is not None:
            x = self.dense(x)
        return self.last_dropout(self.act(x))


class SummaryClassificationHead(nn.Module):
    """Labels for a sequence from its summary (``logits_proj``)."""

    INPUTS: tuple[str, ...] = ()

    def __init__(self, cfg: ModelConfig, labels: int | None = None):
        super().__init__()
        self.summary = SequenceSummary(cfg)
        self.out = nn.Linear(cfg.hidden_size, cfg.num_labels if labels is None else labels)

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.out(self.summary(out["last_hidden_state"]))}


class MultipleChoiceHead(SummaryClassificationHead):
    """One score per choice (each choice read as its own sequence), (batch, choices); the
    model's forward tells it how many choices each question has."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, labels=1)

    def forward(self, out: dict[str, torch.Tensor], num_choices: int = 1) -> dict[str, torch.Tensor]:
        return {"logits": super().forward(out)["logits"].view(-1, num_choices)}


def _masked(x: torch.Tensor, p_mask: torch.Tensor | None) -> torch.Tensor:
    """Scores of the positions ``p_mask`` rules out (1) pushed to -1e30 (-65500 in float16)."""
    if p_mask is None:
        return x
    big = 65500.0 if p_mask.dtype == torch.float16 else 1e30
    return x * (1 - p_mask) - big * p_mask


class SpanEnd(nn.Module):
    """The end scores given a start: each token's state beside the start's, through a dense
    layer, tanh and a norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.hidden_size
        self.dense_in = nn.Linear(2 * d, d)
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.dense_out = nn.Linear(d, 1)

    def forward(self, h: torch.Tensor, start_states: torch.Tensor, p_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm(torch.tanh(self.dense_in(torch.cat([h, start_states], dim=-1))))
        return _masked(self.dense_out(x).squeeze(-1), p_mask)


class AnswerClass(nn.Module):
    """Whether there is an answer: the start state beside the <cls> state (the last token's, or
    ``cls_index``'s), through a dense layer and tanh, to one logit."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.hidden_size
        self.dense_in = nn.Linear(2 * d, d)
        self.dense_out = nn.Linear(d, 1, bias=False)

    def forward(self, h: torch.Tensor, start_states: torch.Tensor, cls_index: torch.Tensor | None) -> torch.Tensor:
        cls = h[:, -1] if cls_index is None else _rows(h, cls_index)
        return self.dense_out(torch.tanh(self.dense_in(torch.cat([start_states, cls], dim=-1)))).squeeze(-1)


def _rows(h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(batch, t, d) at one position per row -> (batch, d)."""
    return h.gather(1, index[:, None, None].expand(-1, 1, h.shape[-1])).squeeze(1)


def _positions(name: str, x: torch.Tensor | None, batch: int, length: int) -> torch.Tensor | None:
    if x is None:
        return None
    if not isinstance(x, torch.Tensor) or x.numel() != batch:
        raise LmatlasError(f"{name} must hold one position per sequence ({batch}), not {tuple(getattr(x, 'shape', ()))}")
    x = x.reshape(batch)
    if x.dtype.is_floating_point:
        return x
    if int(x.min()) < 0 or int(x.max()) >= length:
        raise LmatlasError(f"{name} holds a position outside the sequence (0..{length - 1})")
    return x.long()


class BeamQuestionAnsweringHead(nn.Module):
    INPUTS = ("p_mask", "cls_index", "start_positions", "end_positions", "is_impossible")

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.start = nn.Linear(cfg.hidden_size, 1)
        self.end = SpanEnd(cfg)
        self.answer = AnswerClass(cfg)
        self.start_n_top, self.end_n_top = cfg.xlnet.start_n_top, cfg.xlnet.end_n_top

    def forward(self, out: dict[str, torch.Tensor], p_mask=None, cls_index=None, start_positions=None,
                end_positions=None, is_impossible=None) -> dict[str, torch.Tensor]:
        h = out["last_hidden_state"]
        b, t, _ = h.shape
        if p_mask is not None and (not isinstance(p_mask, torch.Tensor) or tuple(p_mask.shape) != (b, t)):
            raise LmatlasError(f"p_mask must be (batch, length) = {(b, t)}, not {tuple(getattr(p_mask, 'shape', ()))}")
        p_mask = None if p_mask is None else p_mask.to(h.dtype)
        cls_index = _positions("cls_index", cls_index, b, t)
        start_logits = _masked(self.start(h).squeeze(-1), p_mask)
        if start_positions is not None and end_positions is not None:
            return {"loss": self.loss(h, start_logits, p_mask, cls_index, start_positions, end_positions,
                                      is_impossible)}
        if start_positions is not None or end_positions is not None:
            raise LmatlasError("training the question-answering head takes both start_positions and end_positions")
        if min(self.start_n_top, self.end_n_top) > t:
            raise LmatlasError(f"the beam (start_n_top {self.start_n_top}, end_n_top {self.end_n_top}) is wider than "
                               f"the sequence ({t} tokens)")
        start_probs = torch.softmax(start_logits, dim=-1)  # "log probs" in the reference's names
        start_top, start_index = torch.topk(start_probs, self.start_n_top, dim=-1)  # (b, k)
        k = self.start_n_top
        start_states = torch.gather(h, 1, start_index[..., None].expand(-1, -1, h.shape[-1]))  # (b, k, d)
        start_states = start_states[:, None].expand(-1, t, -1, -1)  # (b, t, k, d)
        end_logits = self.end(h[:, :, None].expand_as(start_states), start_states,
                              None if p_mask is None else p_mask[..., None])  # (b, t, k)
        end_top, end_index = torch.topk(torch.softmax(end_logits, dim=1), self.end_n_top, dim=1)  # (b, n, k)
        # The answer class reads the expected start state under the start probabilities.
        expected_start = torch.einsum("btd,bt->bd", h, start_probs)
        return {
            "start_top_log_probs": start_top,
            "start_top_index": start_index,
            "end_top_log_probs": end_top.reshape(-1, k * self.end_n_top),
            "end_top_index": end_index.reshape(-1, k * self.end_n_top),
            "cls_logits": self.answer(h, expected_start, cls_index),
        }

    def loss(self, h, start_logits, p_mask, cls_index, start_positions, end_positions, is_impossible):
        """Mean of the start and end cross-entropies (the end scored given the true start), plus
        half the answerability's binary cross-entropy when ``cls_index`` and ``is_impossible``
        are given."""
        b, t, _ = h.shape
        start_positions = _positions("start_positions", start_positions, b, t)
        end_positions = _positions("end_positions", end_positions, b, t)
        starts = _rows(h, start_positions)[:, None].expand(-1, t, -1)
        end_logits = self.end(h, starts, p_mask)
        loss = (F.cross_entropy(start_logits, start_positions) + F.cross_entropy(end_logits, end_positions)) / 2
        if cls_index is not None and is_impossible is not None:
            impossible = _positions("is_impossible", is_impossible.float(), b, t)
            cls_logits = self.answer(h, _rows(h, start_positions), cls_index)
            loss = loss + 0.5 * F.binary_cross_entropy_with_logits(cls_logits, impossible)
        return loss


__all__ = ["AnswerClass", "BeamQuestionAnsweringHead", "MultipleChoiceHead", "SequenceSummary", "SpanEnd",
           "SummaryClassificationHead"]
