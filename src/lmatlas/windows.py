"""Swin (Liu et al., 2021): attention inside local windows of patches, windows shifted by half a
window every other layer so that neighbouring windows exchange information, and a hierarchy of
stages that merge 2x2 patches into one, halving the resolution and doubling the width.

The blocks are lmatlas' own (``blocks.make_norm``, ``attention.SelfAttention``, ``blocks.MLP``);
what is new is the windows: cutting the grid of patches into windows (padded to whole windows),
the learned bias of each head for each relative offset inside a window, the mask that keeps a
shifted window's attention within the regions that were neighbours before the shift, and the
patch merging between stages.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SelfAttention
from .blocks import MLP, make_norm
from .config import ModelConfig
from .errors import LmatlasError

# Swin's patch-embedding and patch-merging norms keep PyTorch's default epsilon, whatever the
# config's layer_norm_eps (which the layers' norms use).
DEFAULT_EPS = 1e-5


def window_partition(x: torch.Tensor, size: int) -> torch.Tensor:
    """(b, h, w, c) -> (b x windows, size x size, c), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, c)


def window_reverse(windows: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """The inverse of ``window_partition``: -> (b, h, w, c)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // size, w // size, size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


@functools.cache
def relative_position_index(size: int) -> torch.Tensor:
    """(size², size²): for each query and key of a window, the row of their offset (dy, dx) in
    the (2 size - 1)² bias table. Computed when first used (a model is built on the meta device,
    and this is no weight that loading would fill)."""
    axis = torch.arange(size, device="cpu")
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (size - 1)  # (n, n, 2), from 0
    return rel[..., 0] * (2 * size - 1) + rel[..., 1]


@functools.cache
def shift_mask(h: int, w: int, size: int, shift: int) -> torch.Tensor:
    """(windows, size², size²) additive mask of a shifted layer: after the cyclic shift, a window
    at the edge holds patches from opposite sides of the image; they may not attend to each
    other (-100, as the original implementation: exp(-100) is zero in float32)."""
    regions = torch.zeros(1, h, w, 1, device="cpu")
    slices = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
    label = 0
    for rows in slices:
        for cols in slices:
            regions[:, rows, cols, :] = label
            label += 1
    windows = window_partition(regions, size).squeeze(-1)  # (windows, size²)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class SwinBlock(nn.Module):
    """Pre-norm attention within (shifted) windows, then the MLP, each with a residual."""

    def __init__(self, cfg: ModelConfig, shifted: bool):
        super().__init__()
        self.window = cfg.window_size
        self.shift = cfg.window_size // 2 if shifted else 0
        self.attn_norm = make_norm(cfg, cfg.hidden_size)
        self.attn = SelfAttention(cfg)
        self.relative_bias = nn.Parameter(torch.zeros((2 * self.window - 1) ** 2, cfg.num_heads))
        self.mlp_norm = make_norm(cfg, cfg.hidden_size)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        window, shift = self.window, self.shift
        if min(h, w) <= window:  # the whole grid is one window: nothing to shift
            shift = 0
            if min(h, w) < window:
                raise LmatlasError(
                    f"the image is too small for Swin's {window}x{window} windows at a stage of "
                    f"{h}x{w} patches; give a larger image"
                )
        y = self.attn_norm(x).view(b, h, w, c)
        # Whole windows: zeros to the right and bottom, after the norm (they attend as zeros).
        pad_w, pad_h = (window - w % window) % window, (window - h % window) % window
        y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(y, window)  # (b x n, window², c)
        n = windows.shape[0] // b
        index = relative_position_index(window).to(x.device)
        bias = self.relative_bias[index.reshape(-1)].view(window**2, window**2, -1).permute(2, 0, 1)
        mask = bias.to(x.dtype)[None, None]  # (1, 1, heads, window², window²)
        if shift:
            mask = mask + shift_mask(hp, wp, window, shift).to(x.device, x.dtype)[None, :, None]
        mask = mask.expand(b, n, -1, -1, -1).reshape(b * n, -1, window**2, window**2)
        y = window_reverse(self.attn(windows, mask), window, hp, wp)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + self.dropout(y[:, :h, :w].reshape(b, h * w, c))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class PatchMerging(nn.Module):
    """Each 2x2 group of patches concatenated (odd sides padded with zeros), normalised, and
    projected to twice the width."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.hidden_size
        self.norm = make_norm(cfg, 4 * dim, DEFAULT_EPS)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class Stage(nn.Module):
    def __init__(self, cfg: ModelConfig, depth: int, last: bool):
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(cfg, shifted=j % 2 == 1) for j in range(depth))
        self.merge = None if last else PatchMerging(cfg)


class WindowEncoder(nn.Module):
    """Swin's hierarchical encoder: patch embeddings (normalised), stages of window blocks with
    patch merging between them, a final norm, and the average of the last patches as the pooled
    output. Images of any size: their sides are padded to whole patches."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.patch_size = cfg.patch_size
        self.patches = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)
        self.embedding_norm = make_norm(cfg, cfg.hidden_size, DEFAULT_EPS)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.stages = nn.ModuleList(
            Stage(cfg.stage_config(i), depth, last=i == len(cfg.stage_depths) - 1)
            for i, depth in enumerate(cfg.stage_depths)
        )
        self.final_norm = make_norm(cfg, cfg.output_width)

    def forward(
        self, input_ids: torch.Tensor | None = None, *, pixel_values: torch.Tensor | None = None, **_: object
    ) -> dict[str, torch.Tensor]:
        """``pixel_values`` (the skeletons' other arguments are taken and ignored)."""
        if pixel_values is None:
            raise LmatlasError("an image model reads pixel_values (from its image processor), not token ids")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.patches.in_channels:
            raise LmatlasError(
                f"pixel_values must be (batch, {self.patches.in_channels}, height, width), not {tuple(pixel_values.shape)}"
            )
        ph, pw = self.patch_size
        height, width = pixel_values.shape[2:]
        x = F.pad(pixel_values.to(self.patches.weight.dtype), (0, (pw - width % pw) % pw, 0, (ph - height % ph) % ph))
        x = self.patches(x)  # (b, c, h, w)
        h, w = x.shape[2:]
        x = self.dropout(self.embedding_norm(x.flatten(2).transpose(1, 2)))
        for stage in self.stages:
            for block in stage.blocks:
                x = block(x, h, w)
            if stage.merge is not None:
                x = stage.merge(x, h, w)
                h, w = (h + 1) // 2, (w + 1) // 2
        x = self.final_norm(x)
        return {"last_hidden_state": x, "pooler_output": x.mean(dim=1)}


__all__ = ["PatchMerging", "SwinBlock", "WindowEncoder", "relative_position_index", "shift_mask", "window_partition"]
