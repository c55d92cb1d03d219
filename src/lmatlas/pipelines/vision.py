"""Image tasks: image-classification, zero-shot-image-classification, image-feature-extraction.

An image is a file path or a PIL image, read as transformers' pipelines read it (upright by its
EXIF orientation, then RGB: ``images.load_image``), made into pixels by the checkpoint's image
processor (``images.ImageProcessor``), and run through the model in batches.

Where lmatlas differs from transformers 4.57: a string is a file path only (transformers also
takes URLs and base64); ``candidate_labels`` may be one string (transformers iterates over its
characters); image-feature-extraction reads the image encoder's own outputs whatever the head (for
a CLIPModel, its image tower), where transformers returns a head's first output.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import LmatlasError
from ..images import load_image
from .base import Option, Pipeline, boolean, positive_int, sigmoid, softmax, string, strings, where, choice


class ImagePipeline(Pipeline):
    """What the image tasks share: image inputs, the image processor, batches of pixels.

    ``run_model(pixels)`` gives each task's outputs for a batch; the base batches and splits them.
    """

    def __init__(self, model, processor, tokenizer=None, task: str | None = None, batch_size: int = 8, **options):
        self.processor = processor
        super().__init__(model, tokenizer, task=task, batch_size=batch_size, **options)

    def __repr__(self) -> str:
        return f"<lmatlas pipeline {self.task!r} on {self.model.config.model_type}>"

    def check_input(self, item: Any, index: int | None) -> Any:
        if isinstance(item, (str, os.PathLike, Image.Image)):
            return item
        raise LmatlasError(
            f"{where(index)}{self.task} takes an image file, a PIL image or a list of them, not {type(item).__name__}"
        )

    def features(self, item: Any, opts: dict) -> list[dict]:
        return [{"pixel_values": self.processor(load_image(item))[0]}]

    @torch.inference_mode()
    def forward(self, features: list[dict], batch_size: int) -> list[dict[str, np.ndarray]]:
        out: list[dict[str, np.ndarray]] = []
        dtype = self.model.dtype
        for start in range(0, len(features), batch_size):
            pixels = torch.stack([f["pixel_values"] for f in features[start : start + batch_size]]).to(dtype)
            fields = {k: v.float().numpy() for k, v in self.run_model(pixels).items()}
            out.extend({k: v[row].copy() for k, v in fields.items()} for row in range(pixels.shape[0]))
        return out

    def run_model(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class ImageClassification(ImagePipeline):
    """Labels for an image: ``[{"label", "score"}]``, best first, ``top_k`` of them (5 by
    default). Scores: softmax over the labels, sigmoid for a single label or a multi-label
    model, or as ``function_to_apply`` says."""

    task = "image-classification"
    OPTIONS = {
        "top_k": Option(5, positive_int, "labels per image, best first (default 5)", "int"),
        "function_to_apply": Option(
            "default", choice("default", "softmax", "sigmoid", "none"), "softmax, sigmoid or none (default: as the model says)"
        ),
    }

    def run_model(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model(pixel_values=pixels)["logits"]}

    def postprocess(self, item: Any, features: list[dict], outputs: list[dict], opts: dict) -> Any:
        cfg = self.model.config
        function = opts["function_to_apply"]
        if function == "default":  # transformers' rule for images (regression models too get softmax)
            multi = cfg.problem_type == "multi_label_classification" or cfg.num_labels == 1
            function = "sigmoid" if multi else "softmax"
        logits = outputs[0]["logits"]
        scores = {"sigmoid": sigmoid, "softmax": softmax}.get(function, lambda x: x)(logits)
        ranked = sorted(
            ({"label": cfg.id2label[i], "score": float(s)} for i, s in enumerate(scores)),
            key=lambda d: d["score"], reverse=True,
        )  # fmt: skip
        return ranked[: opts["top_k"]]


def _template(name: str, value: Any) -> str:
    value = string(name, value)
    if "{}" not in value:
        raise LmatlasError(f"{name} must hold {{}} where the label goes, not {value!r}")
    return value


class ZeroShotImageClassification(ImagePipeline):
    """CLIP's zero-shot classification: each of ``candidate_labels`` becomes a sentence by
    ``hypothesis_template``, and the image's similarity to each sentence, softmaxed over the
    labels, is its score: ``[{"score", "label"}]``, best first."""

    task = "zero-shot-image-classification"
    OPTIONS = {
        "candidate_labels": Option(None, strings, "the labels to choose from", "list"),
        "hypothesis_template": Option(
            "This is a photo of {}.", _template, "the sentence each label goes into ({} marks where)"
        ),
    }

    def prepare(self, opts: dict) -> None:
        labels = opts["candidate_labels"]
        if not labels:
            raise LmatlasError("zero-shot-image-classification needs candidate_labels")
        sentences = [opts["hypothesis_template"].format(label) for label in labels]
        enc = self.tokenizer(sentences, padding=True)
        ids = torch.tensor(enc["input_ids"])
        mask = torch.tensor(enc["attention_mask"])
        with torch.inference_mode():
            text = self.model.backbone.text_features(ids, mask).float()
        self._texts = torch.nn.functional.normalize(text, dim=-1)

    def run_model(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        backbone = self.model.backbone
        image = torch.nn.functional.normalize(backbone.image_features(pixels).float(), dim=-1)
        return {"logits": image @ self._texts.t() * backbone.logit_scale.float().exp()}

    def postprocess(self, item: Any, features: list[dict], outputs: list[dict], opts: dict) -> Any:
        scores = softmax(outputs[0]["logits"])
        pairs = sorted(zip(scores.tolist(), opts["candidate_labels"]), key=lambda x: -x[0])
        return [{"score": score, "label": label} for score, label in pairs]


class ImageFeatureExtraction(ImagePipeline):
    """The image encoder's last hidden states, ``[1][patches + 1][hidden]`` per image, or with
    ``pool=True`` its pooled output ``[1][hidden]`` (a tensor with ``return_tensors=True``)."""

    task = "image-feature-extraction"
    OPTIONS = {
        "pool": Option(False, boolean, "the pooled output instead of one vector per patch", "bool"),
        "return_tensors": Option(False, boolean, "a torch tensor instead of nested lists", "bool"),
    }

    def run_model(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        backbone = self.model.backbone
        encoder = backbone.vision if self.model.is_dual_encoder else backbone
        field = "pooler_output" if self._pool else "last_hidden_state"
        out = encoder(pixel_values=pixels)
        if out.get(field) is None:
            raise LmatlasError("this model has no pooled output (its checkpoint has no pooler); leave pool off")
        return {field: out[field]}

    def prepare(self, opts: dict) -> None:
        self._pool = opts["pool"]

    def postprocess(self, item: Any, features: list[dict], outputs: list[dict], opts: dict) -> Any:
        value = next(iter(outputs[0].values()))[None]
        return torch.from_numpy(value) if opts["return_tensors"] else value.tolist()


def reads_images(model) -> bool:
    """Whether a loaded model has an image encoder (ViT, CLIP, a CLIP image tower)."""
    return bool(model.config.image_size) or getattr(model, "is_dual_encoder", False)


__all__ = ["ImageClassification", "ImageFeatureExtraction", "ImagePipeline", "ZeroShotImageClassification", "reads_images"]
