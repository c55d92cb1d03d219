"""CLIP's two towers (Radford et al., 2021): a text encoder and an image encoder, each projected
into one space, where an image and a caption that belong together point the same way.

Each tower is the encoder skeleton (``encoder.Encoder``); this module adds the projections and
the learned temperature of the contrastive objective, and nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .encoder import Encoder
from .errors import LmatlasError


class DualEncoder(nn.Module):
    """``cfg`` is the text tower's config, ``cfg.vision`` the image tower's."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vision is None or cfg.projection_dim is None:
            raise LmatlasError("a dual encoder needs a vision config and a projection_dim")
        self.config = cfg
        self.text = Encoder(cfg)
        self.vision = Encoder(cfg.vision)
        self.text_projection = nn.Linear(cfg.hidden_size, cfg.projection_dim, bias=False)
        self.visual_projection = nn.Linear(cfg.vision.hidden_size, cfg.projection_dim, bias=False)
        # log(1/0.07), the paper's initial temperature; checkpoints store their learned value.
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.hf_config.get("logit_scale_init_value", 2.6592))))

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Texts in the shared space, not normalised (transformers' ``get_text_features``)."""
        return self.text_projection(self.text(input_ids, attention_mask)["pooler_output"])

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images in the shared space, not normalised (transformers' ``get_image_features``)."""
        return self.visual_projection(self.vision(pixel_values=pixel_values)["pooler_output"])

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Texts and images: their normalised embeddings and every pair's scaled cosine
        similarity, ``logits_per_image`` (images x texts) and ``logits_per_text``. Either one
        alone gives its own embeddings."""
        out: dict[str, torch.Tensor] = {}
        if input_ids is not None:
            out["text_embeds"] = F.normalize(self.text_features(input_ids, attention_mask), dim=-1)
        if pixel_values is not None:
            out["image_embeds"] = F.normalize(self.image_features(pixel_values), dim=-1)
        if not out:
            raise LmatlasError("CLIP needs input_ids (texts), pixel_values (images) or both")
        if len(out) == 2:
            logits_per_text = out["text_embeds"] @ out["image_embeds"].t() * self.logit_scale.exp()
            out["logits_per_text"] = logits_per_text
            out["logits_per_image"] = logits_per_text.t()
        return out


__all__ = ["DualEncoder"]
