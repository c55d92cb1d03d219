"""The encoder-decoder skeleton: the Transformer (Marian), BART, mBART, T5, Pegasus.

Not a third stack of blocks: the encoder is ``lmatlas.encoder.Encoder`` and the decoder is
``lmatlas.decoder.Decoder`` whose layers also attend to the encoder's output (cross-attention,
``ModelConfig.cross_attention``). Generation runs the encoder once; ``Seq2SeqCache`` holds the
decoder's self-attention cache and the cross-attention keys and values of each source, projected
once. Decoding itself lives in the generation engine.
"""

from __future__ import annotations

import torch
from torch import nn

from .cache import Seq2SeqCache
from .config import ModelConfig
from .decoder import Decoder
from .encoder import Encoder
from .errors import LmatlasError


class EncoderDecoder(nn.Module):
    """An encoder and a cross-attending decoder, sharing one token table unless told otherwise."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg.encoder_config())
        self.decoder = Decoder(cfg.decoder_config())
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.shared_embeddings:
            self.decoder.embeddings.tokens.weight = self.encoder.embeddings.tokens.weight

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> dict:
        return self.encoder(input_ids, attention_mask=attention_mask, **kwargs)

    def new_cache(
        self,
        batch_size: int,
        max_length: int,
        encoder_last_hidden_state: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool = True,
    ) -> Seq2SeqCache:
        """A cache for ``batch_size`` decoder rows of up to ``max_length`` tokens, continuing the
        encoded sources (whose count must divide ``batch_size``: a group of rows per source)."""
        sources = encoder_last_hidden_state.shape[0]
        if batch_size % sources:
            raise LmatlasError(f"{batch_size} decoder rows cannot be split evenly among {sources} sources")
        own = self.decoder.new_cache(batch_size, max_length) if use_cache else None
        with torch.no_grad():
            # Every step reads them all, cold: stored contiguous per head, the keys as (head_dim x
            # source), the layout the step's C kernel reads row by row
            # (``runtime.native.few_queries_attention``; ``attention.few_queries_attention`` without it).
            cross = [
                (k.transpose(-1, -2).contiguous().transpose(-1, -2), v.contiguous())
                for k, v in self.decoder.cross_kv(encoder_last_hidden_state)
            ]
        return Seq2SeqCache(own, cross, attention_mask, encoder_last_hidden_state)

    def forward(
        self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
        decoder_position_ids: torch.Tensor | None = None, encoder_outputs: dict | None = None,
        cache: Seq2SeqCache | None = None, output_hidden_states: bool = False,
    ) -> dict[str, torch.Tensor]:
        if cache is not None:
            encoder_outputs = {"last_hidden_state": cache.encoder_last_hidden_state}
            memory, memory_mask = cache.cross, cache.memory_mask
        else:
            if encoder_outputs is None:
                encoder_outputs = self.encoder(
                    input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states
                )
            memory, memory_mask = encoder_outputs["last_hidden_state"], attention_mask
        out = self.decoder(
            decoder_input_ids,
            attention_mask=decoder_attention_mask,
            position_ids=decoder_position_ids,
            cache=cache.self_attention if cache is not None else None,
            output_hidden_states=output_hidden_states,
            memory=memory,
            memory_mask=memory_mask,
        )
        result = {"last_hidden_state": out["last_hidden_state"]}
        if output_hidden_states:
            result["decoder_hidden_states"] = out["hidden_states"]
            if "hidden_states" in encoder_outputs:
                result["encoder_hidden_states"] = encoder_outputs["hidden_states"]
        result["encoder_last_hidden_state"] = encoder_outputs["last_hidden_state"]
        return result


class EncoderOnly(nn.Module):
    """An encoder-decoder's encoder alone (transformers' ``T5EncoderModel``,
    ``SwitchTransformersEncoderModel``). Its parameters keep the whole model's names
    (``encoder.…``), so the family's one weight map reads and writes it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg.encoder_config())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                **absent: torch.Tensor | None) -> dict[str, torch.Tensor]:
        given = [name for name, value in absent.items() if value is not None]
        if token_type_ids is not None or given:
            name = "token_type_ids" if token_type_ids is not None else given[0]
            raise LmatlasError(f"a {self.config.model_type} encoder takes input_ids and attention_mask, not {name}")
        return self.encoder(input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states)
