"""The image processor against transformers' ViT and CLIP processors, on pictures drawn here in
every colour mode, non-square, as files, PIL images and arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmatlas.errors import LmatlasError
from lmatlas.images import ImageProcessor, expand_images, image_files, load_image

from .helpers_vision import drawing
from .reference import transformers

TOL = 1e-5
MODES = ["RGB", "RGBA", "L", "LA", "P", "CMYK", "1", "I"]


def in_mode(image: Image.Image, mode: str) -> Image.Image:
    if mode == "RGBA":
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(image.size))
        return rgba
    return image.convert(mode)


def processors(kind: str, tmp_path, **kw):
    tf = transformers()
    if kind == "vit":
        ref = tf.ViTImageProcessor(size={"height": 30, "width": 45}, do_convert_rgb=True, **kw)
    else:
        ref = tf.CLIPImageProcessor(size={"shortest_edge": 27}, crop_size={"height": 23, "width": 25}, **kw)
    ref.save_pretrained(tmp_path)
    return ref, ImageProcessor.from_pretrained(tmp_path)


def close(ref, ours, images) -> float:
    expected = ref(images=images, return_tensors="pt")["pixel_values"]
    got = ours(images)
    assert got.shape == expected.shape and got.dtype == torch.float32
    return (got - expected).abs().max().item()


@pytest.mark.parametrize("kind", ["vit", "clip"])
@pytest.mark.parametrize("mode", MODES)
def test_colour_modes(kind, mode, tmp_path):
    ref, ours = processors(kind, tmp_path)
    image = in_mode(drawing(), mode)
    assert close(ref, ours, [image, in_mode(drawing(40, 70, seed=1), mode)]) <= TOL


@pytest.mark.parametrize("kind", ["vit", "clip"])
@pytest.mark.parametrize("resample", [0, 1, 2, 3, 4, 5])
def test_resampling_filters(kind, resample, tmp_path):
    ref, ours = processors(kind, tmp_path, resample=resample)
    assert close(ref, ours, drawing(seed=resample)) <= TOL


@pytest.mark.parametrize("kind", ["vit", "clip"])
def test_arrays(kind, tmp_path):
    ref, ours = processors(kind, tmp_path)
    hwc = np.array(drawing())
    assert close(ref, ours, hwc) <= TOL
    assert close(ref, ours, hwc.transpose(2, 0, 1).copy()) <= TOL  # channels first
    fractions = hwc.astype(np.float32) / 255  # floats in [0, 1] pass through uint8 to resize
    expected = ref(images=fractions, return_tensors="pt", do_rescale=False)["pixel_values"]
    ours.do_rescale = False
    assert (ours(fractions) - expected).abs().max().item() <= TOL


def test_small_image_is_padded_by_the_crop(tmp_path):
    """CLIP's centre crop pads an image smaller than the crop with zeros, as transformers does."""
    tf = transformers()
    ref = tf.CLIPImageProcessor(do_resize=False, crop_size={"height": 50, "width": 21})
    ref.save_pretrained(tmp_path)
    assert close(ref, ImageProcessor.from_pretrained(tmp_path), drawing(33, 20)) <= TOL


def test_files_and_exif_orientation(tmp_path):
    """A file is read as transformers' pipelines read it: upright by EXIF, then RGB."""
    tf = transformers()
    from transformers.image_utils import load_image as ref_load

    image = drawing()
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert np.array_equal(np.array(load_image(path)), np.array(ref_load(str(path))))
    ref = tf.ViTImageProcessor(size={"height": 30, "width": 45})
    ref.save_pretrained(tmp_path)
    ours = ImageProcessor.from_pretrained(tmp_path)
    expected = ref(images=ref_load(str(path)), return_tensors="pt")["pixel_values"]
    assert (ours(path) - expected).abs().max().item() <= TOL


def test_folders(tmp_path):
    drawing().save(tmp_path / "b.png")
    drawing().save(tmp_path / "a.JPG")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in image_files(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.name for p in expand_images([tmp_path / "b.png", tmp_path])] == ["b.png", "a.JPG", "b.png"]


def test_bad_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmatlasError, match="a folder with no images"):
        image_files(tmp_path / "empty")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    with pytest.raises(LmatlasError, match="text.png: not an image Pillow can read"):
        load_image(text)
    whole = tmp_path / "whole.png"
    drawing().save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(LmatlasError, match="cut.png: a broken or truncated image"):
        load_image(cut)
    with pytest.raises(LmatlasError, match="missing.png: no such image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(LmatlasError, match="an image must be"):
        ImageProcessor()([1, 2])
    with pytest.raises(LmatlasError, match="image_processor_type 'DetrImageProcessor' is not supported"):
        ImageProcessor({"image_processor_type": "DetrImageProcessor"})
