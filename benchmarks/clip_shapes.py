"""Text-to-image retrieval after `lmatlas train clip`: a tiny CLIP (random weights, a character
tokenizer) trained with the contrastive objective on drawn shapes in colours and their captions,
then each caption ("a red circle") ranks held-out drawings; top-1 is how often its own kind comes
first, before and after training. Not a timing.

    python benchmarks/clip_shapes.py [--steps 300] [--variants 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny-checkpoint helpers

from lmatlas.image_text import ImageTextEncoder  # noqa: E402
from lmatlas.training import TrainConfig  # noqa: E402
from lmatlas.training.contrastive import ContrastiveRecipe  # noqa: E402
from lmatlas.training.recipes import train  # noqa: E402
from tests.helpers_vision import save_clip  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 190, 60), "blue": (40, 60, 230)}
SHAPES = ("circle", "square", "triangle")


def draw(colour: str, shape: str, rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (30, 30), tuple(int(v) for v in rng.integers(200, 256, 3)))
    d = ImageDraw.Draw(image)
    size = int(rng.integers(12, 22))
    x, y = (int(v) for v in rng.integers(1, 30 - size, 2))
    fill = tuple(int(min(255, max(0, c + rng.integers(-25, 26)))) for c in COLOURS[colour])
    if shape == "circle":
        d.ellipse((x, y, x + size, y + size), fill=fill)
    elif shape == "square":
        d.rectangle((x, y, x + size, y + size), fill=fill)
    else:
        d.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=fill)
    return image


def top1(folder: Path, gallery: list[Path], captions: list[str]) -> float:
    enc = ImageTextEncoder(folder)
    scores = enc.encode(captions) @ enc.encode_images(gallery).T  # captions x images, same order
    return float((scores.argmax(1) == np.arange(len(captions))).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--variants", type=int, default=8, help="training drawings of each kind")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    kinds = [(c, s) for c in COLOURS for s in SHAPES]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = save_clip(tmp / "clip")
        rows = []
        for v in range(args.variants):
            for c, s in kinds:
                name = f"{c}-{s}-{v}.png"
                draw(c, s, rng).save(tmp / name)
                rows.append({"image": name, "text": f"a {c} {s}"})
        (tmp / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        gallery, captions = [], []
        for c, s in kinds:  # held out: one new drawing of each kind
            draw(c, s, rng).save(tmp / f"test-{c}-{s}.png")
            gallery.append(tmp / f"test-{c}-{s}.png")
            captions.append(f"a {c} {s}")
        before = top1(model, gallery, captions)
        recipe = ContrastiveRecipe(model=model, data=[tmp / "pairs.jsonl"], val_fraction=0.0)
        train(recipe, TrainConfig(out=tmp / "run", steps=args.steps, batch_size=9, lr=1e-3, progress=False,
                                  device="cpu"))
        after = top1(tmp / "run" / "model", gallery, captions)
    print(f"machine: {platform.processor() or platform.machine()}")
    print(f"{len(rows)} training pairs, {len(kinds)} kinds; text-to-image top-1 over {len(kinds)} held-out drawings: "
          f"{before:.2f} before training, {after:.2f} after {args.steps} steps")


if __name__ == "__main__":
    main()
