"""Text-to-image search: `search build --model` a CLIP checkpoint indexes images with its image
tower (and texts with its text tower, in the same space); a question is embedded by the text
tower. On a tiny random CLIP the tests write, the index's vectors and its ranking are checked
against the CLIP towers run directly (`ImageTextEncoder`): the meaning of the ranking belongs to
the model (`benchmarks/clip_shapes.py` trains one on drawn shapes)."""

from __future__ import annotations

import numpy as np
import pytest

from lmatlas.cli import main
from lmatlas.errors import LmatlasError
from lmatlas.image_text import ImageTextEncoder
from lmatlas.search import Index

from .helpers_vision import save_clip, save_drawings


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return save_clip(tmp_path_factory.mktemp("clip") / "clip")


def test_images_and_texts_in_one_index(clip, tmp_path):
    photos = tmp_path / "photos"
    paths = save_drawings(photos, n=4)
    (photos / "caption.txt").write_text("a red circle on noise\n", encoding="utf-8")
    stats = Index(tmp_path / "idx").build([photos], model=str(clip))
    assert stats["embedded"] == 5 and stats["chunks"] == 5
    towers = ImageTextEncoder(clip)
    question = "a red circle"
    q = towers.encode([question])[0]
    vectors = np.concatenate([towers.encode_images(paths), towers.encode(["a red circle on noise"])])
    expected = [str(p.resolve()) for p in paths] + [str((photos / "caption.txt").resolve())]
    order = [expected[i] for i in np.argsort(-(vectors @ q), kind="stable")]
    hits = Index(tmp_path / "idx").query(question, k=5, mode="semantic")
    assert [h.source for h in hits] == order
    scores = sorted(vectors @ q, reverse=True)
    assert np.allclose([h.score for h in hits], scores, atol=1e-5)
    image_hit = next(h for h in hits if h.source.endswith((".png", ".jpg")))
    assert image_hit.text.startswith("img")  # an image's text is its file name


def test_the_command_line(clip, tmp_path, capsys):
    photos = tmp_path / "photos"
    save_drawings(photos, n=3)
    assert main(["search", "build", str(tmp_path / "idx"), "--from", str(photos), "--model", str(clip),
                 "--no-progress"]) == 0
    assert "indexed 3 passages" in capsys.readouterr().out
    assert main(["search", "query", str(tmp_path / "idx"), "a dog on a beach", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. ") and "img" in out


def test_images_need_a_clip_model(tmp_path, capsys):
    """Without a CLIP model, images in a folder are passed over (as other formats are) and an
    image named directly is one sentence."""
    photos = tmp_path / "photos"
    (image,) = save_drawings(photos, n=1)
    (photos / "notes.txt").write_text("Some text.\n", encoding="utf-8")
    stats = Index(tmp_path / "idx").build([photos])
    assert stats["chunks"] == 1
    with pytest.raises(LmatlasError, match="not a format search reads .*images with a CLIP model"):
        Index(tmp_path / "idx2").build([image])
    assert not (tmp_path / "idx2").exists()
