"""Images in: files, PIL images and arrays -> the pixel tensor a vision model reads.

``ImageProcessor`` does what transformers' ``ViTImageProcessor`` (ViT, Swin) and
``CLIPImageProcessor`` do, step for step and dtype for dtype, from a checkpoint's
``preprocessor_config.json``: resize with Pillow's filter of the same number (to a fixed height and
width, or CLIP's shortest edge), centre crop, rescale to [0, 1], normalise by the mean and standard
deviation. Pillow does the resizing, so the pixels are the same as transformers'.

Every colour mode (grayscale, RGBA, CMYK, palette) becomes RGB by Pillow's ``convert("RGB")``, as
transformers' pipelines load an image and as its CLIP processor does (its ViT processor fails on
them instead).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import LmatlasError
from .files import read_json

# File names an image folder is read for (what Pillow opens, by their usual extensions).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

IMAGENET_STANDARD = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
OPENAI_CLIP = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])

# transformers' defaults for the fields a preprocessor_config.json may leave out, per processor.
_DEFAULTS = {
    "ViTImageProcessor": dict(
        do_resize=True, size={"height": 224, "width": 224}, resample=2, do_center_crop=False, crop_size=None,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=IMAGENET_STANDARD[0], image_std=IMAGENET_STANDARD[1],
    ),
    "CLIPImageProcessor": dict(
        do_resize=True, size={"shortest_edge": 224}, resample=3, do_center_crop=True,
        crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=OPENAI_CLIP[0], image_std=OPENAI_CLIP[1],
    ),
}  # fmt: skip
# The ViT processor reads an int size as a square; CLIP's as the shortest edge.
_SQUARE_BY_DEFAULT = {"ViTImageProcessor": True, "CLIPImageProcessor": False}


def load_image(source: str | os.PathLike | Image.Image) -> Image.Image:
    """An image file (or a PIL image) as an RGB PIL image, turned upright by its EXIF orientation,
    as transformers' ``load_image`` does. An unreadable or truncated file is one sentence."""
    if isinstance(source, Image.Image):
        image = source
    else:
        path = Path(source)
        if not path.is_file():
            raise LmatlasError(f"{path}: no such image file")
        try:
            image = Image.open(path)
            image.load()  # decode now: a truncated file fails here, not later in a resize
        except UnidentifiedImageError:
            raise LmatlasError(f"{path}: not an image Pillow can read") from None
        except OSError as e:
            raise LmatlasError(f"{path}: a broken or truncated image ({e})") from None
    return ImageOps.exif_transpose(image).convert("RGB")


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` (by extension, sorted); a folder without any is an error."""
    path = Path(folder)
    if not path.is_dir():
        raise LmatlasError(f"{path}: not a folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise LmatlasError(f"{path}: a folder with no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def expand_images(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files and folders of them -> the image files, in the order given."""
    out: list[Path] = []
    for source in sources:
        out.extend(image_files(source) if Path(source).is_dir() else [Path(source)])
    return out


def _size_dict(size: Any, default_to_square: bool, name: str) -> dict[str, int]:
    """transformers' ``get_size_dict``: an int is a square or a shortest edge; a dict as given."""
    if isinstance(size, int):
        return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    if isinstance(size, dict) and (set(size) == {"height", "width"} or set(size) == {"shortest_edge"}):
        return {k: int(v) for k, v in size.items()}
    raise LmatlasError(f"preprocessor_config.json: {name} {size!r} is not supported (height and width, or shortest_edge)")


class ImageProcessor:
    """``preprocessor_config.json`` as a callable: images -> (batch, 3, height, width) float32."""

    def __init__(self, config: dict | None = None, source: str = "preprocessor_config.json"):
        config = dict(config or {})
        kind = config.get("image_processor_type") or "ViTImageProcessor"
        kind = kind.removesuffix("Fast")
        if kind not in _DEFAULTS:
            # Swin, DeiT and most others save a ViTImageProcessor; the rest are not read yet.
            raise LmatlasError(f"{source}: image_processor_type {kind!r} is not supported; lmatlas reads {', '.join(_DEFAULTS)}")
        fields = {**_DEFAULTS[kind], **{k: v for k, v in config.items() if k in _DEFAULTS[kind] and v is not None}}
        self.kind = kind
        self.do_resize = bool(fields["do_resize"])
        self.size = _size_dict(fields["size"], _SQUARE_BY_DEFAULT[kind], "size")
        self.resample = Image.Resampling(int(fields["resample"]))
        self.do_center_crop = bool(fields["do_center_crop"]) and fields["crop_size"] is not None
        self.crop_size = _size_dict(fields["crop_size"], True, "crop_size") if self.do_center_crop else None
        self.do_rescale = bool(fields["do_rescale"])
        self.rescale_factor = float(fields["rescale_factor"])
        self.do_normalize = bool(fields["do_normalize"])
        self.image_mean = [float(m) for m in fields["image_mean"]]
        self.image_std = [float(s) for s in fields["image_std"]]

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "ImageProcessor":
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            raise LmatlasError(f"{folder}: no preprocessor_config.json (a vision model folder holds one)")
        return cls(read_json(path), str(path))

    def __call__(self, images: Any) -> torch.Tensor:
        """One image or a list: paths, PIL images, or arrays (height, width, 3) or (3, height,
        width), uint8 in [0, 255] or floats in [0, 1], as transformers takes them."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise LmatlasError("no images given")
        return torch.from_numpy(np.stack([self.one(image) for image in images]))

    def one(self, image: Any) -> np.ndarray:
        x = _as_array(image)  # (h, w, 3)
        if self.do_resize:
            x = _resize(x, self.output_size(x.shape[0], x.shape[1]), self.resample)
        if self.do_center_crop:
            x = _center_crop(x, self.crop_size["height"], self.crop_size["width"])
        if self.do_rescale:
            # Upcast first, then down to float32, as transformers' ``rescale``.
            x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            if not np.issubdtype(x.dtype, np.floating):
                x = x.astype(np.float32)
            x = (x - np.array(self.image_mean, dtype=x.dtype)) / np.array(self.image_std, dtype=x.dtype)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after resizing: fixed, or the shortest edge scaled to ``shortest_edge``
        with the other one scaled alike and rounded down."""
        if "shortest_edge" not in self.size:
            return self.size["height"], self.size["width"]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size["shortest_edge"], int(self.size["shortest_edge"] * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)


def _as_array(image: Any) -> np.ndarray:
    """An image as a (height, width, 3) array (its own dtype)."""
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        return np.array(image if image.mode == "RGB" else image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise LmatlasError(f"an image must be a file path, a PIL image or an array, not {type(image).__name__}")
    if image.ndim == 2:  # one channel: grey, as Pillow turns "L" into RGB
        image = image[:, :, None]
    if image.ndim != 3:
        raise LmatlasError(f"an image array must have 2 or 3 dimensions, not shape {tuple(image.shape)}")
    # Channels first when the first axis can be channels, as transformers infers it.
    if image.shape[0] in (1, 3):
        image = image.transpose(1, 2, 0)
    elif image.shape[-1] not in (1, 3):
        raise LmatlasError(f"an image array needs 1 or 3 channels first or last, not shape {tuple(image.shape)}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def _resize(x: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Pillow's resize of an (h, w, 3) array to (height, width). A float array in [0, 1] goes
    through uint8 and comes back scaled to [0, 1], as transformers' ``resize`` does."""
    scale = False
    if x.dtype != np.uint8:
        if np.allclose(x, x.astype(int)):
            if x.min() < 0 or x.max() > 255:
                raise LmatlasError(f"an image array holds values outside [0, 255] ({x.min()} to {x.max()})")
        elif x.min() >= 0 and x.max() <= 1:
            scale = True
            x = (x.astype(np.float64) * 255).astype(np.float32)
        else:
            raise LmatlasError(f"an image array of fractions must hold values in [0, 1], not {x.min()} to {x.max()}")
    height, width = size
    out = np.array(Image.fromarray(x.astype(np.uint8)).resize((width, height), resample=resample))
    return (out.astype(np.float64) * (1 / 255)).astype(np.float32) if scale else out


def _center_crop(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centre (height, width) of an (h, w, c) array; a smaller image is padded with zeros
    around, as transformers' ``center_crop``."""
    h, w = x.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0:
        return x[top : top + height, left : left + width]
    new_h, new_w = max(height, h), max(width, w)
    padded = np.zeros((new_h, new_w, x.shape[2]), dtype=x.dtype)
    top_pad, left_pad = -(-(new_h - h) // 2), -(-(new_w - w) // 2)
    padded[top_pad : top_pad + h, left_pad : left_pad + w] = x
    top, left = top + top_pad, left + left_pad
    return padded[max(0, top) : min(new_h, top + height), max(0, left) : min(new_w, left + width)]


__all__ = ["IMAGE_EXTENSIONS", "ImageProcessor", "expand_images", "image_files", "load_image"]
