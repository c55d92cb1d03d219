"""CLIP's two towers as an encoder for text-to-image search, against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmatlas.errors import LmatlasError
from lmatlas.image_text import ImageTextEncoder

from .helpers_vision import save_clip, save_drawings, save_vit
from .reference import transformers

TOL = 1e-4


def test_images_and_texts_in_one_space(tmp_path):
    folder = save_clip(tmp_path / "clip", seed=9)
    pictures = save_drawings(tmp_path / "pictures", n=3)
    tf = transformers()
    ref = tf.CLIPModel.from_pretrained(folder).eval()
    processor = tf.CLIPProcessor.from_pretrained(folder)
    texts = ["a photo of a cat.", "this is a dog", "red"]
    from transformers.image_utils import load_image

    inputs = processor(text=texts, images=[load_image(str(p)) for p in pictures], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = ref(**inputs)
    ours = ImageTextEncoder(folder)
    images, sentences = ours.encode_images(pictures, batch_size=2), ours.encode(texts)
    assert images.shape == (3, 24) and np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert np.abs(images - out.image_embeds.numpy()).max() <= TOL
    assert np.abs(sentences - out.text_embeds.numpy()).max() <= TOL


def test_needs_a_clip_model(tmp_path):
    with pytest.raises(LmatlasError, match="not a CLIP model \\(model_type vit\\)"):
        ImageTextEncoder(save_vit(tmp_path))
