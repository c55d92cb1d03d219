"""The encoder skeleton: BERT and its descendants (DistilBERT, RoBERTa, XLM-R, ALBERT, ELECTRA),
and the Transformers that read images as sequences of patches (ViT, CLIP's two towers)."""

from __future__ import annotations

import torch
from torch import nn

from .attention import padding_mask
from .blocks import Layer, embedding, make_norm
from .config import ModelConfig
from . import sparse_attention
from .embedding_layer import Embeddings, PatchEmbeddings, Pooler
from .errors import LmatlasError
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
        self.layers = nn.ModuleList(Layer(cfg, i) for i in range(n_blocks))
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
            embedding(cfg.relative_attention_num_buckets, cfg.num_heads)
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
        task_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Token ids (with their mask, types, positions), or an image model's ``pixel_values``."""
        cfg = self.config
        sparse = False
        if cfg.image_size:
            if pixel_values is None:
                raise LmatlasError("an image model reads pixel_values (from its image processor), not token ids")
            x = self.embeddings(pixel_values)
            length = x.shape[1]
        else:
            if input_ids is None:
                raise LmatlasError("a text model reads input_ids, not pixel_values")
            length = input_ids.shape[1]
            sparse = cfg.block_sparse and sparse_attention.applies(input_ids.shape[1], cfg.block_size,
                                                                  cfg.num_random_blocks)
            if sparse:  # Big Bird: whole blocks (padded), and the sparse pattern as an attention bias
                input_ids, attention_mask, token_type_ids, position_ids, task_type_ids = _pad_to_blocks(
                    cfg, input_ids, attention_mask, token_type_ids, position_ids, task_type_ids
                )
            x = self.embeddings(input_ids, token_type_ids, position_ids, task_type_ids)
        if sparse:
            drawn = None
            if self.training:  # the paper's random blocks, anew each step (see sparse_attention)
                drawn = sparse_attention.draw_random_blocks(x.shape[1] // cfg.block_size, cfg.num_random_blocks,
                                                            cfg.num_heads)
            mask = sparse_attention.block_sparse_bias(attention_mask, cfg.block_size, cfg.num_random_blocks,
                                                      x.dtype, drawn)
        else:
            mask = padding_mask(attention_mask)
        if cfg.causal_encoder:  # CLIP's text tower: a causal mask over an encoder's padded batch
            causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
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
        out = {"last_hidden_state": x[:, :length]}  # Big Bird's padding to whole blocks removed
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


def _pad_to_blocks(cfg: ModelConfig, input_ids, attention_mask, token_type_ids, position_ids, task_type_ids):
    """The inputs padded to whole blocks, as transformers' Big Bird pads them: the pad token,
    masked, of token type 0 (and position ``pad_token_id`` where positions are given)."""
    b, t = input_ids.shape
    n = sparse_attention.padding_to_blocks(t, cfg.block_size)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if not n:
        return input_ids, attention_mask, token_type_ids, position_ids, task_type_ids

    def pad(x, value):
        return None if x is None else torch.nn.functional.pad(x, (0, n), value=value)

    pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    return (pad(input_ids, pad_id), pad(attention_mask, 0), pad(token_type_ids, 0), pad(position_ids, pad_id),
            pad(task_type_ids, 0))


def end_of_text(input_ids: torch.Tensor, eos_token_id: int | list[int] | None) -> torch.Tensor:
    """Per row, the position of the first end-of-text token, where CLIP's text tower reads its
    pooled output. Checkpoints whose config says eos 2 (the first CLIP configs) predate the
    setting: their end token is the largest id, as transformers takes it."""
    ids = input_ids.to(torch.int)
    if eos_token_id is None or eos_token_id == 2:
        return ids.argmax(-1)
    return (ids == eos_token_id).int().argmax(-1)
