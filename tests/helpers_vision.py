"""Small vision checkpoints for the tests: tiny ViT and CLIP models written by transformers with
random weights, their image processors, a CLIP tokenizer made here, and drawn pictures."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .reference import randomize, transformers

VIT = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=70,
           image_size=[30, 45], patch_size=7)  # fmt: skip
CLIP_VISION = dict(hidden_size=48, intermediate_size=60, num_hidden_layers=2, num_attention_heads=3,
                   image_size=30, patch_size=7, projection_dim=24)  # fmt: skip
LABELS = ["red circle", "green square", "blue triangle", "yellow line", "grey noise"]


def drawing(width: int = 61, height: int = 37, seed: int = 0) -> Image.Image:
    """Shapes on a noisy background."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((5, 4, width // 2, height - 6), fill=(200, 30, 40))
    draw.rectangle((width // 2, 2, width - 3, height // 2), fill=(20, 180, 90))
    draw.line((0, height - 1, width - 1, 0), fill=(250, 250, 10), width=3)
    return image


def save_drawings(folder: Path, n: int = 3) -> list[Path]:
    """``n`` drawings of several sizes and colour modes, as files."""
    folder.mkdir(parents=True, exist_ok=True)
    modes = ["RGB", "L", "RGBA", "CMYK", "P"]
    paths = []
    for i in range(n):
        image = drawing(40 + 7 * i, 70 - 9 * i, seed=i).convert(modes[i % len(modes)])
        path = folder / f"img{i}.{'jpg' if image.mode in ('CMYK', 'L') else 'png'}"
        image.save(path)
        paths.append(path)
    return paths


def clip_tokenizer(folder: Path) -> int:
    """A CLIP tokenizer over lowercase characters and a few merges, saved into ``folder``;
    returns its vocabulary size (the end-of-text token is the last id)."""
    tf = transformers()
    chars = string.ascii_lowercase + ".,'!?0123456789"
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["</w>"] = len(vocab)
    merges = ["t h", "th is</w>", "o f</w>", "p h", "ph o", "pho t", "phot o</w>", "i s</w>"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    raw = folder / "raw-tokenizer"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps(vocab))
    (raw / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = tf.CLIPTokenizerFast(vocab_file=str(raw / "vocab.json"), merges_file=str(raw / "merges.txt"))
    tok.save_pretrained(folder)
    return len(vocab)


def save_vit(folder: Path, cls: str = "ViTForImageClassification", seed: int = 0, **config) -> Path:
    tf = transformers()
    id2label = dict(enumerate(LABELS))
    cfg = tf.ViTConfig(**(VIT | config), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    model = getattr(tf, cls)(cfg).eval()
    randomize(model, seed=seed)
    model.save_pretrained(folder)
    tf.ViTImageProcessor(size={"height": cfg.image_size[0], "width": cfg.image_size[1]}).save_pretrained(folder)
    return folder


def save_clip(folder: Path, cls: str = "CLIPModel", seed: int = 0) -> Path:
    """A tiny CLIP (or one of its towers) with its tokenizer and image processor."""
    tf = transformers()
    vocab = clip_tokenizer(folder)
    text = dict(vocab_size=vocab, hidden_size=40, intermediate_size=70, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=40, pad_token_id=vocab - 1, bos_token_id=vocab - 2,
                eos_token_id=vocab - 1, projection_dim=24)  # fmt: skip
    if cls == "CLIPModel":
        cfg = tf.CLIPConfig(text_config=text, vision_config=CLIP_VISION, projection_dim=24)
    elif cls.startswith("CLIPText"):
        cfg = tf.CLIPTextConfig(**text)
    else:
        cfg = tf.CLIPVisionConfig(**CLIP_VISION)
    torch.manual_seed(0)
    model = getattr(tf, cls)(cfg).eval()
    randomize(model, seed=seed)
    model.save_pretrained(folder)
    tf.CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(folder)
    return folder


def save_swin(folder: Path, cls: str = "SwinForImageClassification", seed: int = 0) -> Path:
    """A tiny Swin with 3x3 windows over 2x2 patches of 27x39 images (padding at every stage)."""
    tf = transformers()
    id2label = dict(enumerate(LABELS))
    cfg = tf.SwinConfig(embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=3, patch_size=2,
                        image_size=[27, 39], id2label=id2label, label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    model = getattr(tf, cls)(cfg).eval()
    randomize(model, seed=seed)
    model.save_pretrained(folder)
    tf.ViTImageProcessor(size={"height": 27, "width": 39}).save_pretrained(folder)
    return folder
