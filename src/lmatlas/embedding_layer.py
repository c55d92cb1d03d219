"""The model's input layer (token, position and token-type embeddings) and BERT's pooler.

Shared by the encoder and the decoder skeletons.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import activation, embedding, make_norm, random_parameter
from .config import ModelConfig
from .errors import LmatlasError
from .positions import sinusoidal_positions


class Embeddings(nn.Module):
    """Token + learned position (+ token type, + task type) embeddings, normalised, optionally projected.

    ALBERT and ELECTRA embed at a smaller width (``embedding_size``) and project up to the
    hidden size: the factorised embeddings that shrink the vocabulary matrix.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        e = cfg.embedding_size
        # OPT adds positions after projecting its narrow word embeddings in (see the config).
        self.positions_after_projection = cfg.output_projection
        p = cfg.hidden_size if self.positions_after_projection else e
        pad = cfg.pad_token_id if cfg.pad_token_id is not None and 0 <= cfg.pad_token_id < cfg.vocab_size else None
        self.tokens = embedding(cfg.vocab_size, e, pad)
        stored = cfg.position_embedding == "learned" or (
            cfg.position_embedding == "sinusoidal" and cfg.positions_stored
        )
        self.positions = embedding(cfg.max_positions, p) if stored else None
        # CTRL's sinusoidal encodings are computed, not stored in the checkpoint.
        self.computed_positions = cfg.position_embedding == "sinusoidal" and not cfg.positions_stored
        self.position_width = p
        self.sinusoidal_layout = cfg.sinusoidal_layout
        self.positions_float64 = cfg.positions_float64
        self.token_types = embedding(cfg.type_vocab_size, e) if cfg.type_vocab_size else None
        self.task_types = embedding(cfg.task_type_vocab_size, e) if cfg.task_type_vocab_size else None
        self.norm = make_norm(cfg, e) if cfg.embedding_norm else None
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.project = (
            nn.Linear(e, cfg.hidden_size, bias=cfg.embedding_projection_bias) if cfg.embedding_projection else None
        )
        self.scale = cfg.embedding_scale
        self.pad_token_id = cfg.pad_token_id
        self.positions_from_padding = cfg.positions_from_padding
        self.position_offset = cfg.position_offset

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.positions_from_padding:
            # RoBERTa (after fairseq): real tokens count from pad + 1, padding keeps pad's slot.
            real = input_ids.ne(self.pad_token_id).long()
            return torch.cumsum(real, dim=1) * real + self.pad_token_id
        return torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] + self.position_offset

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        task_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``inputs_embeds``: vectors given in place of the token table's (the Decision
        Transformer embeds returns, states and actions itself); give ``position_ids`` with them."""
        x = self.tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if self.scale != 1.0:
            x = x * self.scale
        if self.positions is not None or self.computed_positions:
            if position_ids is None:
                position_ids = self.position_ids(input_ids)
            elif self.position_offset:
                position_ids = position_ids + self.position_offset
            if self.computed_positions:
                positions = sinusoidal_positions(
                    position_ids, self.position_width, self.sinusoidal_layout, self.positions_float64
                ).to(x.dtype)
            else:
                positions = self.positions(position_ids)
        else:
            positions = None
        if positions is not None and not self.positions_after_projection:
            x = x + positions
        if self.token_types is not None:
            if token_type_ids is None:
                x = x + self.token_types.weight[0]
            else:
                x = x + self.token_types(token_type_ids)
        if self.task_types is not None:
            x = x + (self.task_types.weight[0] if task_type_ids is None else self.task_types(task_type_ids))
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        if self.project is not None:
            x = self.project(x)
        if positions is not None and self.positions_after_projection:
            x = x + positions
        return x


class PatchEmbeddings(nn.Module):
    """An image as a sequence (ViT, CLIP's image tower): a class token, then one embedding per
    patch (a convolution whose stride is its size: a linear map of each patch's pixels), plus
    learned positions; CLIP normalises them (its ``pre_layrnorm``, ``embedding_norm``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.hidden_size
        self.image_size = cfg.image_size
        self.patches = nn.Conv2d(cfg.num_channels, h, cfg.patch_size, stride=cfg.patch_size, bias=cfg.patch_bias)
        grid = cfg.patch_grid
        self.class_token = random_parameter(h, std=0.02)
        self.positions = random_parameter(grid[0] * grid[1] + 1, h, std=0.02)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.norm = make_norm(cfg, h) if cfg.embedding_norm else None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        check_pixels(pixel_values, self.patches.in_channels, self.image_size)
        x = self.patches(pixel_values.to(self.patches.weight.dtype)).flatten(2).transpose(1, 2)  # (b, patches, h)
        cls = self.class_token.expand(x.shape[0], 1, -1)
        x = self.dropout(torch.cat([cls, x], dim=1) + self.positions)
        return self.norm(x) if self.norm is not None else x


def check_pixels(pixel_values: torch.Tensor, channels: int, image_size: tuple[int, int]) -> None:
    """Images of the size and channels the model was made for (its position table has one row
    per patch of that size)."""
    if pixel_values.ndim != 4 or pixel_values.shape[1] != channels:
        raise LmatlasError(f"pixel_values must be (batch, {channels}, height, width), not {tuple(pixel_values.shape)}")
    if tuple(pixel_values.shape[2:]) != tuple(image_size):
        raise LmatlasError(
            f"the model reads images of {image_size[0]}x{image_size[1]} pixels, not "
            f"{pixel_values.shape[2]}x{pixel_values.shape[3]} (its image processor resizes them)"
        )


class Pooler(nn.Module):
    """A dense layer and an activation over the first token ([CLS], <s>)."""

    def __init__(self, cfg: ModelConfig, act: str):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(act)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden[:, 0]))


__all__ = ["Embeddings", "PatchEmbeddings", "Pooler", "check_pixels"]
