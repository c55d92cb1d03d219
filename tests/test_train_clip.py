"""`lmatlas train clip`: CLIP's contrastive objective continuing a tiny CLIP on drawn shapes and
their captions; the saved folder reads back in transformers and as an image-text encoder."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image, ImageDraw

from lmatlas.cli import main
from lmatlas.image_text import ImageTextEncoder

from .helpers_vision import save_clip
from .reference import transformers

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230)}


def shapes(folder, n: int = 6) -> list[dict]:
    """Drawings of a circle or a square in a colour, with their captions."""
    rows = []
    for i in range(n):
        colour, shape = list(COLOURS)[i % 3], ("circle", "square")[i % 2]
        image = Image.new("RGB", (36, 30), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        box = (6 + i, 5, 28 + i, 25)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        image.save(folder / f"{i}.png")
        rows.append({"image": f"{i}.png", "text": f"a {colour} {shape}"})
    return rows


def test_train_clip_cli(tmp_path, capsys):
    model = save_clip(tmp_path / "clip", seed=3)
    data = tmp_path / "pairs"
    data.mkdir()
    rows = shapes(data)
    (data / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert main(["train", "clip", "--model", str(model), "--data", str(data / "pairs.jsonl"), "--out", str(out),
                 "--steps", "3", "--batch-size", "4", "--lr", "1e-3", "--val-fraction", "0.34", "--no-progress"]) == 0
    dev = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][-1]
    assert dev["split"] == "dev" and 0 <= dev["top1"] <= 1
    # transformers reads the trained folder, and lmatlas embeds images and texts with it alike.
    ref = transformers().CLIPModel.from_pretrained(out / "model").eval()
    encoder = ImageTextEncoder(out / "model")
    images = encoder.encode_images([data / r["image"] for r in rows])
    processor = transformers().CLIPProcessor.from_pretrained(out / "model")
    inputs = processor(images=[Image.open(data / r["image"]) for r in rows], return_tensors="pt")
    with torch.no_grad():
        expected = torch.nn.functional.normalize(ref.get_image_features(**inputs), dim=-1).numpy()
    assert np.abs(images - expected).max() <= 1e-4


def test_train_clip_needs_a_clip_model(tmp_path, capsys):
    from .helpers_vision import save_vit

    vit = save_vit(tmp_path / "vit")
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"image": "x.png", "text": "a"}) + "\n")
    assert main(["train", "clip", "--model", str(vit), "--data", str(tmp_path / "pairs.jsonl"),
                 "--out", str(tmp_path / "run")]) == 1  # fmt: skip
    assert "is not a CLIP model (model_type vit)" in capsys.readouterr().err
