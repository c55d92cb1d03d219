"""The image pipelines against transformers.pipeline on tiny checkpoints and drawn pictures:
labels identical, scores within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest

import lmatlas
from lmatlas.errors import LmatlasError

from .helpers_vision import LABELS, save_clip, save_drawings, save_swin, save_vit
from .reference import transformers

TOL = 1e-4


def ref_pipeline(task: str, folder):
    return transformers().pipeline(task, model=str(folder), device="cpu")


def same_ranking(expected: list[dict], got: list[dict]) -> None:
    assert [d["label"] for d in got] == [d["label"] for d in expected]
    assert max(abs(g["score"] - e["score"]) for g, e in zip(got, expected)) <= TOL


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return save_drawings(tmp_path_factory.mktemp("pictures"), n=4)


@pytest.mark.parametrize("family,top_k", [("vit", None), ("vit", 2), ("vit", 9), ("swin", 3)])
def test_image_classification(family, top_k, pictures, tmp_path):
    folder = (save_vit if family == "vit" else save_swin)(tmp_path, seed=3)
    kw = {} if top_k is None else {"top_k": top_k}
    ref, ours = ref_pipeline("image-classification", folder), lmatlas.pipeline("image-classification", folder)
    inputs = [str(p) for p in pictures]
    expected, got = ref(inputs, **kw), ours(inputs, **kw)
    assert len(got) == len(inputs)
    for e, g in zip(expected, got):
        same_ranking(e, g)
    same_ranking(ref(inputs[0], **kw), ours(inputs[0], **kw))  # one image: one list of labels


def test_zero_shot_image_classification(pictures, tmp_path):
    folder = save_clip(tmp_path, seed=5)
    ref = ref_pipeline("zero-shot-image-classification", folder)
    ours = lmatlas.pipeline("zero-shot-image-classification", folder)
    for template in (None, "a drawing of {}!"):
        kw = {"candidate_labels": LABELS} | ({"hypothesis_template": template} if template else {})
        for picture in pictures:
            expected, got = ref(str(picture), **kw), ours(str(picture), **kw)
            assert list(got[0]) == ["score", "label"]
            same_ranking(expected, got)


@pytest.mark.parametrize("pool", [False, True])
def test_image_feature_extraction(pool, pictures, tmp_path):
    folder = save_vit(tmp_path, cls="ViTModel", seed=4)
    ref = ref_pipeline("image-feature-extraction", folder)
    ours = lmatlas.pipeline("image-feature-extraction", folder, pool=pool)
    expected, got = np.array(ref(str(pictures[1]), pool=pool)), np.array(ours(str(pictures[1])))
    assert got.shape == expected.shape and np.abs(got - expected).max() <= TOL


def test_clip_vision_tower_features(pictures, tmp_path):
    folder = save_clip(tmp_path, cls="CLIPVisionModel", seed=6)
    expected = np.array(ref_pipeline("image-feature-extraction", folder)(str(pictures[2])))
    got = np.array(lmatlas.pipeline("image-feature-extraction", folder)(str(pictures[2])))
    assert got.shape == expected.shape and np.abs(got - expected).max() <= TOL


def test_clip_text_feature_extraction(tmp_path):
    folder = save_clip(tmp_path, cls="CLIPTextModel", seed=8)
    texts = ["this is a photo of a cat.", "a dog!"]
    expected = ref_pipeline("feature-extraction", folder)(texts)
    got = lmatlas.pipeline("feature-extraction", folder)(texts)
    for e, g in zip(expected, got):
        e, g = np.array(e), np.array(g)
        assert g.shape == e.shape and np.abs(g - e).max() <= TOL


def test_bad_inputs(pictures, tmp_path):
    vit = save_vit(tmp_path / "vit")
    pipe = lmatlas.pipeline("image-classification", vit)
    cut = tmp_path / "cut.png"
    cut.write_bytes(pictures[0].read_bytes()[:200])
    with pytest.raises(LmatlasError, match="cut.png: a broken or truncated image"):
        pipe(str(cut))
    with pytest.raises(LmatlasError, match="takes an image file, a PIL image or a list of them, not int"):
        pipe(3)
    with pytest.raises(LmatlasError, match="zero-shot-image-classification needs a CLIP model"):
        lmatlas.pipeline("zero-shot-image-classification", vit)
    clip = save_clip(tmp_path / "clip")
    with pytest.raises(LmatlasError, match="needs candidate_labels"):
        lmatlas.pipeline("zero-shot-image-classification", clip)(str(pictures[0]))
    with pytest.raises(LmatlasError, match="a CLIP model puts texts and images in one space"):
        lmatlas.pipeline("feature-extraction", clip)
    with pytest.raises(LmatlasError, match="a vit model reads images \\(use image-feature-extraction\\), not texts"):
        lmatlas.pipeline("feature-extraction", vit)
    bert = tmp_path / "bert"
    tf = transformers()
    tf.BertModel(tf.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=20)).save_pretrained(bert)
    with pytest.raises(LmatlasError, match="is a text model \\(model_type bert\\), it reads no images"):
        lmatlas.pipeline("image-classification", bert)


def test_run_cli_on_files_and_folders(pictures, tmp_path, capsys):
    import json

    from lmatlas.cli import main

    folder = save_vit(tmp_path / "vit", seed=3)
    api = lmatlas.pipeline("image-classification", folder)
    code = main(["run", "image-classification", "-m", str(folder), "--top-k", "2", str(pictures[0]),
                 str(pictures[0].parent)])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == [str(pictures[0])] + [str(p) for p in sorted(pictures)]
    assert rows[0]["output"] == api(str(pictures[0]), top_k=2)


def test_run_cli_bad_inputs(tmp_path, capsys):
    from lmatlas.cli import main

    folder = save_vit(tmp_path / "vit")
    (tmp_path / "empty").mkdir()
    assert main(["run", "image-classification", "-m", str(folder), str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "empty: a folder with no images" in err and "Traceback" not in err
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    assert main(["run", "image-classification", "-m", str(folder), str(broken)]) == 1
    assert "broken.png: not an image Pillow can read" in capsys.readouterr().err
