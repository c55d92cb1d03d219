"""Task heads that sit on a skeleton's last hidden states.

Names follow the ``--head`` choices of ``lmatlas.load``; output fields follow transformers'
(``logits``, ``start_logits``, ``end_logits``) so code written for one reads the other.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .blocks import activation, make_norm
from .config import ModelConfig
from .embedding_layer import Pooler
from .errors import LmatlasError
from .xlnet_heads import BeamQuestionAnsweringHead, MultipleChoiceHead, SummaryClassificationHead


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


class LastTokenClassificationHead(nn.Module):
    """A decoder's labels for the whole sequence, read at its last token.

    transformers' ``*ForSequenceClassification`` decoders score every position with a bias-free
    linear layer and keep each row's last token that is not ``pad_token_id`` (only the last token
    has seen the whole text). The pad id, not the attention mask, decides, so the model's own
    ``forward`` passes the input ids and the config's pad id (``takes_input_ids``).
    """

    takes_input_ids = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        # OPT-350m's hidden states leave the decoder projected to its narrower embedding width.
        self.out = nn.Linear(cfg.embedding_size, cfg.num_labels, bias=False)
        self.before_first_pad = cfg.classify_before_first_pad

    def forward(
        self, out: dict[str, torch.Tensor], input_ids: torch.Tensor, pad_token_id: int | None
    ) -> dict[str, torch.Tensor]:
        logits = self.out(out["last_hidden_state"])
        rows = torch.arange(logits.shape[0], device=logits.device)
        at = last_token(input_ids, pad_token_id, self.before_first_pad)
        return {"logits": logits[rows, at.to(logits.device)]}


def last_token(input_ids: torch.Tensor, pad_token_id: int | None, before_first_pad: bool = False) -> torch.Tensor:
    """Per row, the position of the rightmost token that is not ``pad_token_id`` — right or
    left padding alike; position 0 for a row of nothing but padding, as transformers gives.
    Without a pad id only a single sequence can be read, at its last position.

    ``before_first_pad`` (Transformer-XL's rule in transformers): the position before the first
    pad token, counted round to the last position when the row starts with one or has none."""
    b, t = input_ids.shape
    if before_first_pad and pad_token_id is not None:
        return (input_ids.eq(pad_token_id).int().argmax(-1) - 1) % t
    if pad_token_id is None:
        if b != 1:
            raise LmatlasError(
                "a decoder classifier reads each sequence at its last token that is not padding, and "
                "config.json has no pad_token_id: classify one sequence at a time, or set pad_token_id"
            )
        return torch.full((1,), t - 1, dtype=torch.long, device=input_ids.device)
    positions = torch.arange(t, device=input_ids.device)
    # argmax takes the first of equal values: a row without a real token gives 0.
    return (positions * input_ids.ne(pad_token_id)).argmax(-1)


def sequence_classification(cfg: ModelConfig) -> nn.Module:
    """Encoders classify their first token (or pooler), decoders their last, XLNet its summary."""
    if cfg.xlnet is not None:
        return SummaryClassificationHead(cfg)
    return LastTokenClassificationHead(cfg) if cfg.causal else SequenceClassificationHead(cfg)


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


class MaskedQuestionAnsweringHead(nn.Module):
    """Big Bird's question answering: the tokens pass an MLP (dense, activation, dense, residual,
    norm) before the start and end scores, and the question's tokens — those up to the first
    [SEP], but [CLS] — are scored -1e6, so that the answer is looked for in the context. Without
    token types, the question's are 0 and the context's 1 (``default_token_types``)."""

    takes_input_ids = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.sep = cfg.question_head_sep
        self.dense_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.activation)
        self.dense_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.norm = make_norm(cfg, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.out = nn.Linear(cfg.hidden_size, 2)

    def question(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(batch, t) 1 on the question's tokens: up to and with the first [SEP]."""
        length = input_ids.eq(self.sep).int().argmax(-1, keepdim=True) + 1
        return (torch.arange(input_ids.shape[1], device=input_ids.device)[None] < length).long()

    def default_token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        return 1 - self.question(input_ids)

    def forward(self, out: dict[str, torch.Tensor], input_ids: torch.Tensor, pad_token_id) -> dict[str, torch.Tensor]:
        h = self.dropout(out["last_hidden_state"])
        h = self.norm(self.dropout(self.dense_out(self.act(self.dense_in(h)))) + h)
        logits = self.out(h)
        mask = self.question(input_ids)
        mask[:, 0] = 0
        logits = logits - mask[..., None] * 1e6
        start, end = logits.unbind(-1)
        return {"start_logits": start.contiguous(), "end_logits": end.contiguous()}


def question_answering(cfg: ModelConfig) -> nn.Module:
    return MaskedQuestionAnsweringHead(cfg) if cfg.question_head_sep is not None else QuestionAnsweringHead(cfg)


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


class ImageClassificationHead(nn.Module):
    """Labels for an image: a linear layer over the class token's final state (ViT), or over the
    pooled output where the model pools (Swin's average of its patches)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.from_pooled = cfg.pooling is not None
        self.out = nn.Linear(cfg.output_width, cfg.num_labels)

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = out["pooler_output"] if self.from_pooled else out["last_hidden_state"][:, 0]
        return {"logits": self.out(h)}


class ProjectionHead(nn.Module):
    """One CLIP tower's pooled output in the space both towers share (transformers'
    ``CLIPTextModelWithProjection`` and ``CLIPVisionModelWithProjection``): ``text_embeds`` or
    ``image_embeds``, not normalised."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.projection_dim is None:
            raise LmatlasError("a projection head needs projection_dim in config.json")
        self.field = "image_embeds" if cfg.image_size else "text_embeds"
        self.out = nn.Linear(cfg.hidden_size, cfg.projection_dim, bias=False)

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {self.field: self.out(out["pooler_output"]), "last_hidden_state": out["last_hidden_state"]}


def causal_lm(cfg: ModelConfig) -> nn.Module:
    """The vocabulary projection, or Transformer-XL's adaptive softmax (``adaptive``)."""
    if cfg.adaptive_cutoffs is not None:
        from .adaptive import AdaptiveLMHead

        return AdaptiveLMHead(cfg)
    return CausalLMHead(cfg)


HEADS: dict[str, Callable[[ModelConfig], nn.Module] | None] = {
    "base": None,
    "encoder": None,  # an encoder-decoder's encoder alone
    "causal-lm": causal_lm,
    "seq2seq-lm": Seq2SeqLMHead,
    "masked-lm": MaskedLMHead,
    "sequence-classification": sequence_classification,
    "token-classification": TokenClassificationHead,
    "question-answering": question_answering,
    "replaced-token-detection": ReplacedTokenDetectionHead,
    "image-classification": ImageClassificationHead,
    "projection": ProjectionHead,
    # XLNet's: a score per choice from each choice's summary, and SQuAD 2.0's beam over spans.
    "multiple-choice": MultipleChoiceHead,
    "question-answering-beam": BeamQuestionAnsweringHead,
}
