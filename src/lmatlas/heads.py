"""Task heads that sit on a skeleton's last hidden states.

Names follow the ``--head`` choices of ``lmatlas.load``; output fields follow transformers'
(``logits``, ``start_logits``, ``end_logits``) so code written for one reads the other.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import activation, make_norm
from .config import ModelConfig
from .encoder import Pooler


class MaskedLMHead(nn.Module):
    """Dense + activation + norm, then a vocabulary projection tied to the input embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        e = cfg.embedding_size
        self.dense = nn.Linear(cfg.hidden_size, e)
        self.act = activation(cfg.mlm_activation)
        self.norm = make_norm(cfg, e)
        self.decoder = nn.Linear(e, cfg.vocab_size)

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.norm(self.act(self.dense(out["last_hidden_state"])))
        return {"logits": self.decoder(h)}


class SequenceClassificationHead(nn.Module):
    """Labels for the whole sequence from its first token.

    BERT and ALBERT classify the base model's pooler output; RoBERTa, ELECTRA and DistilBERT
    carry their own dense layer over the first token (``cfg.classifier_activation``).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pooler = Pooler(cfg, cfg.classifier_activation) if cfg.classifier_activation else None
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.out = nn.Linear(cfg.hidden_size, cfg.num_labels)

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.pooler is not None:
            pooled = self.pooler(self.dropout(out["last_hidden_state"]))
        else:
            pooled = out["pooler_output"]
        return {"logits": self.out(self.dropout(pooled))}


class TokenClassificationHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.out = nn.Linear(cfg.hidden_size, cfg.num_labels)

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.out(self.dropout(out["last_hidden_state"]))}


class QuestionAnsweringHead(nn.Module):
    """Extractive QA: a start and an end score for every token."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.out = nn.Linear(cfg.hidden_size, 2)

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        start, end = self.out(out["last_hidden_state"]).unbind(-1)
        return {"start_logits": start.contiguous(), "end_logits": end.contiguous()}


class ReplacedTokenDetectionHead(nn.Module):
    """ELECTRA's discriminator: one logit per token, positive where the token was replaced."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.activation)
        self.out = nn.Linear(cfg.hidden_size, 1)

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.out(self.act(self.dense(out["last_hidden_state"]))).squeeze(-1)}


class CausalLMHead(nn.Module):
    """Next-token logits: the vocabulary projection, tied to the input embeddings unless the
    checkpoint unties it (Llama). CTRL's carries a bias."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.decoder = nn.Linear(cfg.embedding_size, cfg.vocab_size, bias=cfg.lm_head_bias)

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.decoder(out["last_hidden_state"])}


class Seq2SeqLMHead(nn.Module):
    """An encoder-decoder's next-token logits over the target vocabulary, from the decoder.

    Tied to the token embeddings unless the checkpoint unties it (T5 v1.1); BART's family adds
    ``final_logits_bias`` (the bias here); T5 v1.0 rescales by d_model**-0.5 before its tied
    projection (``lm_head_scale``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.decoder = nn.Linear(cfg.hidden_size, cfg.target_vocab_size, bias=cfg.lm_head_bias)
        self.scale = cfg.lm_head_scale

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = out["last_hidden_state"]
        if self.scale != 1.0:
            h = h * self.scale
        return {"logits": self.decoder(h), "encoder_last_hidden_state": out["encoder_last_hidden_state"]}


HEADS: dict[str, type[nn.Module] | None] = {
    "base": None,
    "causal-lm": CausalLMHead,
    "seq2seq-lm": Seq2SeqLMHead,
    "masked-lm": MaskedLMHead,
    "sequence-classification": SequenceClassificationHead,
    "token-classification": TokenClassificationHead,
    "question-answering": QuestionAnsweringHead,
    "replaced-token-detection": ReplacedTokenDetectionHead,
}
