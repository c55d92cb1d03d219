"""The encoder skeleton: BERT and its descendants (DistilBERT, RoBERTa, XLM-R, ALBERT, ELECTRA),
and the Transformers that read images as sequences of patches (ViT, CLIP's two towers)."""

from __future__ import annotations

import torch
from torch import nn

from .attention import padding_mask
from .blocks import Layer, make_norm
from .config import ModelConfig
from .errors import LmatlasError
from .embedding_layer import Embeddings, PatchEmbeddings, Pooler
from .positions import relative_position_bias


class Encoder(nn.Module):
    """Embeddings, then bidirectional layers, then an optional pooler.

    ``layer_plan`` lists which block runs at each depth: ``range(num_layers)`` for most models;
    for ALBERT's cross-layer sharing it revisits the blocks of each group.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = PatchEmbeddings(cfg) if cfg.image_size else Embeddings(cfg)
        groups, inner = cfg.num_layer_groups, cfg.inner_group_size
        shared = cfg.cross_layer_sharing
        n_blocks = groups * inner if shared else cfg.num_layers
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(n_blocks))
        if shared:
            self.layer_plan = [
                int(i / (cfg.num_layers / groups)) * inner + j for i in range(cfg.num_layers) for j in range(inner)
            ]
        else:
            self.layer_plan = list(range(cfg.num_layers))
        self.final_norm = make_norm(cfg, cfg.hidden_size, cfg.final_norm_eps) if cfg.final_norm else None
        self.pooler = Pooler(cfg, cfg.pooler_activation) if cfg.pooler_activation else None
        # T5: one table of per-head biases by relative-position bucket, shared by every layer.
        self.relative_attention_bias = (
            nn.Embedding(cfg.relative_attention_num_buckets, cfg.num_heads)
            if cfg.position_embedding == "relative"
            else None
        )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        pixel_values: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Token ids (with their mask, types, positions), or an image model's ``pixel_values``."""
        if self.config.image_size:
            if pixel_values is None:
                raise LmatlasError("an image model reads pixel_values (from its image processor), not token ids")
            x = self.embeddings(pixel_values)
        else:
            if input_ids is None:
                raise LmatlasError("a text model reads input_ids, not pixel_values")
            x = self.embeddings(input_ids, token_type_ids, position_ids)
        mask = padding_mask(attention_mask)
        if self.config.causal_encoder:  # CLIP's text tower: a causal mask over an encoder's padded batch
            t = x.shape[1]
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            mask = causal if mask is None else mask & causal
        if self.relative_attention_bias is not None:
            t = input_ids.shape[1]
            bias = relative_position_bias(
                self.relative_attention_bias, 0, t, t, True, self.config.relative_attention_max_distance
            ).to(x.dtype)
            mask = bias if mask is None else bias.masked_fill(~mask, torch.finfo(x.dtype).min)
        hidden_states = [x] if output_hidden_states else None
        for i in self.layer_plan:
            x = self.layers[i](x, mask)
            if hidden_states is not None:
                hidden_states.append(x)
        pooling = self.config.pooling
        if self.final_norm is not None and pooling != "class-norm":
            x = self.final_norm(x)
            if hidden_states is not None and pooling is None and not self.config.image_size:
                hidden_states[-1] = x  # as transformers counts them: the last one normalised
        out = {"last_hidden_state": x}
        if self.pooler is not None:
            out["pooler_output"] = self.pooler(x)
        elif pooling == "class-norm":
            out["pooler_output"] = self.final_norm(x[:, 0])
        elif pooling == "eos":
            rows = torch.arange(x.shape[0], device=x.device)
            out["pooler_output"] = x[rows, end_of_text(input_ids, self.config.eos_token_id)]
        if hidden_states is not None:
            out["hidden_states"] = tuple(hidden_states)
        return out


def end_of_text(input_ids: torch.Tensor, eos_token_id: int | list[int] | None) -> torch.Tensor:
    """Per row, the position of the first end-of-text token, where CLIP's text tower reads its
    pooled output. Checkpoints whose config says eos 2 (the first CLIP configs) predate the
    setting: their end token is the largest id, as transformers takes it."""
    ids = input_ids.to(torch.int)
    if eos_token_id is None or eos_token_id == 2:
        return ids.argmax(-1)
    return (ids == eos_token_id).int().argmax(-1)
