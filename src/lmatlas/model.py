"""A skeleton with a head: the module ``lmatlas.load`` returns."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .blocks import init_weights
from .cache import KVCache, Seq2SeqCache
from .config import ModelConfig
from .decoder import Decoder
from .encoder import Encoder
from .encoder_decoder import EncoderDecoder, EncoderOnly
from .errors import LmatlasError
from .heads import HEADS
from .outputs import ModelOutput
from .recurrence import Memory, RecurrentDecoder
from .towers import DualEncoder
from .trajectories import TrajectoryDecoder
from .windows import WindowEncoder
from . import xlnet


class LmatlasModel(nn.Module):
    """``backbone`` (a skeleton) + optional ``head``, named as in ``lmatlas.heads.HEADS``."""

    def __init__(self, cfg: ModelConfig, head: str = "base"):
        super().__init__()
        if head not in HEADS:
            raise LmatlasError(f"unknown head {head!r}; known: {', '.join(HEADS)}")
        self.config = cfg
        self.head_name = head
        if cfg.vision is not None:  # CLIP: a text and an image tower
            self.backbone = DualEncoder(cfg)
        elif cfg.state_dim is not None:  # the Decision Transformer: a GPT-2 over trajectories
            self.backbone = TrajectoryDecoder(cfg)
        elif cfg.window_size:  # Swin: stages of windowed attention
            self.backbone = WindowEncoder(cfg)
        elif cfg.memory_length is not None:  # Transformer-XL: segments read with a memory of the last ones
            self.backbone = RecurrentDecoder(cfg)
        elif cfg.xlnet is not None:  # XLNet: two-stream relative attention with memory
            self.backbone = xlnet.XLNetBackbone(cfg)
        elif cfg.is_encoder_decoder:
            # "encoder": the encoder alone (T5EncoderModel), for embeddings.
            self.backbone = EncoderOnly(cfg) if head == "encoder" else EncoderDecoder(cfg)
        else:
            self.backbone = Decoder(cfg) if cfg.causal else Encoder(cfg)
        head_cls = HEADS[head]
        self.head = head_cls(cfg) if head_cls is not None else None
        init_weights(self)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the vocabulary projection with the input embeddings where the model does."""
        if self.is_encoder_decoder:
            self.backbone.tie_weights()
        if hasattr(self.head, "tie"):  # Transformer-XL's adaptive softmax, tied cluster by cluster
            self.head.tie(self.backbone.embeddings)
        decoder = getattr(self.head, "decoder", None)
        if decoder is None or not self.config.tie_word_embeddings:
            return  # image and trajectory models have no token table at all
        if not isinstance(decoder, nn.Linear):
            return  # a quantized head holds its own blocks of the table (lmatlas.quantization)
        backbone = self.backbone.decoder if self.is_encoder_decoder else self.backbone
        decoder.weight = backbone.embeddings.tokens.weight

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        """Distinct parameters (tied weights counted once), as transformers counts them; a matrix
        kept in quantized blocks counts its weights (a tied head's blocks copy the embeddings)."""
        tied = self.config.tie_word_embeddings
        quantized = [(name, m) for name, m in self.named_modules() if isinstance(getattr(m, "blocks", None), torch.Tensor)]
        blocks = sum(m.in_features * m.out_features for name, m in quantized if not (tied and name == "head.decoder"))
        return sum(p.numel() for p in self.parameters()) + blocks

    @property
    def is_decoder(self) -> bool:
        return isinstance(self.backbone, (Decoder, RecurrentDecoder))

    @property
    def reads_attention_mask(self) -> bool:
        """Whether padding can be masked (Transformer-XL reads no mask: pad it on the right only)."""
        return not isinstance(self.backbone, RecurrentDecoder)

    @property
    def is_dual_encoder(self) -> bool:
        """CLIP: a text and an image tower (``towers.DualEncoder``)."""
        return isinstance(self.backbone, DualEncoder)

    @property
    def is_encoder_decoder(self) -> bool:
        return isinstance(self.backbone, EncoderDecoder)

    @property
    def decodes_with_memory(self) -> bool:
        """XLNet: it generates, carrying its memory and a permutation mask, not a key/value cache."""
        return isinstance(self.backbone, xlnet.XLNetBackbone)

    def new_cache(self, batch_size: int, max_length: int, **encoded: Any) -> KVCache | Seq2SeqCache | Memory:
        """A key/value cache for ``batch_size`` sequences of up to ``max_length`` tokens
        (Transformer-XL's: its memory, ``recurrence.Memory``).

        Encoder-decoders also take the encoded sources: ``encoder_last_hidden_state`` and the
        source ``attention_mask`` (see ``EncoderDecoder.new_cache``)."""
        return self.backbone.new_cache(batch_size, max_length, **encoded)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> ModelOutput:
        """An encoder-decoder's encoder alone (``last_hidden_state`` of the source)."""
        if not self.is_encoder_decoder:
            raise LmatlasError("encode() is for encoder-decoder models")
        return ModelOutput(self.backbone.encode(input_ids, attention_mask))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        cache: KVCache | None = None,
        logits_to_keep: int = 0,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        decoder_position_ids: torch.Tensor | None = None,
        encoder_outputs: dict | None = None,
        task_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        returns_to_go: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        rewards: torch.Tensor | None = None,
        mems: list[torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        **inputs: Any,
    ) -> ModelOutput:
        """Encoders: the whole sequence. Decoders: the new tokens, continuing ``cache`` if given
        (``attention_mask`` then covers the cached tokens too); ``logits_to_keep=n`` projects
        only the last n positions onto the vocabulary.

        Encoder-decoders, as transformers: the source (``input_ids``, ``attention_mask``) or its
        ``encoder_outputs``, and the target so far (``decoder_input_ids``, with
        ``decoder_attention_mask``); with a ``Seq2SeqCache`` the source comes from the cache and
        ``decoder_input_ids`` are the new target tokens.

        ``task_type_ids``: ERNIE's task types, for the models that embed them.

        Transformer-XL, as transformers: ``mems``, the memory the previous segment returned (a
        (length, batch, hidden) tensor per layer), which it continues; its output has the next
        ``mems``. ``labels`` (its language-model head): per-position ``losses`` and their mean
        ``loss`` instead of the log-probabilities.

        ``inputs``: a model's own (XLNet's ``perm_mask``, ``target_mapping``, ``input_mask``,
        ``use_mems``, and its beam question-answering head's ``p_mask``, ``cls_index`` and
        labels; see ``lmatlas.xlnet.forward``); XLNet reads ``mems`` too."""
        if self.decodes_with_memory:
            given = {k: v for k, v in (("mems", mems), ("labels", labels)) if v is not None}
            return ModelOutput(xlnet.forward(
                self, input_ids, attention_mask, token_type_ids, position_ids, cache, output_hidden_states,
                **given, **inputs))
        if inputs:
            raise LmatlasError(f"{self.config.model_type} models take no argument {sorted(inputs)[0]!r}")
        recurrent = isinstance(self.backbone, RecurrentDecoder)
        if mems is not None and not recurrent:
            raise LmatlasError(f"mems are Transformer-XL's memory (and XLNet's); this {self.config.model_type} model keeps none")
        if labels is not None and not getattr(self.head, "takes_labels", False):
            raise LmatlasError("labels are read by Transformer-XL's adaptive softmax head; other heads give logits "
                               "to compute a loss from")
        if task_type_ids is not None and not self.config.task_type_vocab_size:
            raise LmatlasError(f"task_type_ids are for models with task type embeddings (ERNIE's use_task_id); "
                               f"this {self.config.model_type} model has none")
        if isinstance(self.backbone, TrajectoryDecoder):
            if states is None or actions is None or returns_to_go is None or timesteps is None:
                raise LmatlasError("a Decision Transformer reads states, actions, returns_to_go and timesteps")
            # rewards are taken, as transformers takes them, and not read: returns-to-go carry them.
            return ModelOutput(self.backbone(states, actions, returns_to_go, timesteps, attention_mask))
        if self.is_dual_encoder:
            return ModelOutput(self.backbone(input_ids, attention_mask, pixel_values))
        if pixel_values is not None and not self.config.image_size:
            raise LmatlasError(f"{self.config.model_type} is a text model; it reads input_ids, not pixel_values")
        if self.is_encoder_decoder:
            if token_type_ids is not None:
                raise LmatlasError("encoder-decoder models take no token_type_ids")
            if decoder_input_ids is None:
                raise LmatlasError(
                    "an encoder-decoder needs decoder_input_ids: the target so far, from the decoder start token"
                )
            if input_ids is None and encoder_outputs is None and cache is None:
                raise LmatlasError("an encoder-decoder needs the source: input_ids (or encoder_outputs)")
            out = self.backbone(
                input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_attention_mask, decoder_position_ids=decoder_position_ids,
                encoder_outputs=encoder_outputs, cache=cache, output_hidden_states=output_hidden_states,
            )  # fmt: skip
        elif self.is_decoder:
            if token_type_ids is not None:
                raise LmatlasError("decoder models take no token_type_ids")
            out = self.backbone(
                input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                output_hidden_states=output_hidden_states, **({"mems": mems} if recurrent else {}),
            )  # fmt: skip
        else:
            if token_type_ids is None and hasattr(self.head, "default_token_types") and input_ids is not None:
                token_type_ids = self.head.default_token_types(input_ids)  # Big Bird's QA: question 0, context 1
            out = self.backbone(
                input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
                output_hidden_states=output_hidden_states, task_type_ids=task_type_ids, pixel_values=pixel_values,
            )  # fmt: skip
        if logits_to_keep and (self.is_decoder or self.is_encoder_decoder):
            if getattr(self.head, "takes_input_ids", False):
                raise LmatlasError("logits_to_keep is for language-model heads; a classifier reads its own token")
            out["last_hidden_state"] = out["last_hidden_state"][:, -logits_to_keep:]
        if self.head is None:
            return ModelOutput(out)
        if getattr(self.head, "takes_input_ids", False):  # a decoder classifier finds its last token, Big Bird's QA its question
            result = self.head(out, input_ids, self.config.pad_token_id)
        elif labels is not None:
            result = self.head(out, labels)
        else:
            result = self.head(out)
        for key in ("hidden_states", "decoder_hidden_states", "encoder_hidden_states"):
            if output_hidden_states and key in out:
                result[key] = out[key]
        if "mems" in out:
            result["mems"] = out["mems"]
        return ModelOutput(result)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        """Continue ``input_ids``: transformers' ``generate()`` arguments and semantics.

        See ``lmatlas.generation.generate``; returns the prompts followed by the new tokens.
        """
        from .generation import generate

        return generate(self, input_ids, attention_mask=attention_mask, **kwargs)
