"""Bad checkpoints and arguments give one clear sentence naming the file or argument."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lmatlas
from lmatlas import LmatlasError

from .reference import save_reference
from .test_parity_encoders import build_reference


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    build_reference("bert", "masked-lm").save_pretrained(folder)
    return folder


def copy(src, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_no_such_folder(tmp_path):
    with pytest.raises(LmatlasError, match="no such folder"):
        lmatlas.load(tmp_path / "missing" / "model")


def test_file_instead_of_folder(bert_folder):
    with pytest.raises(LmatlasError, match="not a folder"):
        lmatlas.load(bert_folder / "config.json")


def test_missing_config(bert_folder, tmp_path):
    folder = copy(bert_folder, tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(LmatlasError, match="no config.json"):
        lmatlas.load(folder)


def test_corrupt_config(bert_folder, tmp_path):
    folder = copy(bert_folder, tmp_path)
    (folder / "config.json").write_text("{ not json")
    with pytest.raises(LmatlasError, match=r"config.json: not valid JSON"):
        lmatlas.load(folder)


def test_missing_weights(bert_folder, tmp_path):
    folder = copy(bert_folder, tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(LmatlasError, match="no weights"):
        lmatlas.load(folder)


def test_unknown_model_type(bert_folder, tmp_path):
    folder = copy(bert_folder, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "perceiver"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LmatlasError, match="model_type 'perceiver' is not supported"):
        lmatlas.load(folder)


def test_wrong_shape(bert_folder, tmp_path):
    folder = copy(bert_folder, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] += 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LmatlasError, match=r"intermediate.dense.weight has shape \(70, 48\), but config.json implies \(71, 48\)"):
        lmatlas.load(folder)


def test_truncated_safetensors(bert_folder, tmp_path):
    folder = copy(bert_folder, tmp_path)
    file = folder / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(LmatlasError, match="model.safetensors: not a readable safetensors file"):
        lmatlas.load(folder)


def test_corrupt_bin(tmp_path):
    ref = build_reference("bert", "base")
    save_reference(ref, tmp_path, safe=False)
    (tmp_path / "pytorch_model.bin").write_bytes(b"garbage" * 100)
    with pytest.raises(LmatlasError, match="pytorch_model.bin: not a readable PyTorch weights file"):
        lmatlas.load(tmp_path)


def test_bin_with_code_is_refused(tmp_path):
    """weights_only=True: a pickle that would run code is refused, not executed."""
    ref = build_reference("bert", "base")
    ref.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(LmatlasError, match=r"pytorch_model.bin: holds pickled objects other than tensors \(builtins\.exec\)"):
        lmatlas.load(tmp_path)


def test_missing_tensor(bert_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = copy(bert_folder, tmp_path)
    state = load_file(folder / "model.safetensors")
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LmatlasError, match="no weight bert.encoder.layer.1.output.dense.weight"):
        lmatlas.load(folder)


def test_missing_shard(tmp_path):
    ref = build_reference("bert", "base")
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    next(tmp_path.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(LmatlasError, match="shard model-00002.* is missing"):
        lmatlas.load(tmp_path)


def test_unknown_head(bert_folder):
    with pytest.raises(LmatlasError, match="head 'replaced-token-detection' is not available for bert"):
        lmatlas.load(bert_folder, head="replaced-token-detection")


def test_bad_dtype(bert_folder):
    with pytest.raises(LmatlasError, match="dtype 'float8' is not supported"):
        lmatlas.load(bert_folder, dtype="float8")


def test_hub_id_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(LmatlasError, match="not in the Hugging Face cache while offline"):
        lmatlas.load("someone/some-model-that-is-not-cached")


def test_hub_id_from_local_cache(monkeypatch, tmp_path):
    """A hub id resolves through huggingface_hub's cache; offline, nothing is downloaded."""
    import huggingface_hub.constants as c

    snapshot = tmp_path / "hub" / "models--someone--tiny-bert" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--someone--tiny-bert" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-bert" / "refs" / "main").write_text("0" * 40)
    ref = build_reference("bert", "masked-lm")
    ref.save_pretrained(snapshot)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = lmatlas.load("someone/tiny-bert")
    assert model.head_name == "masked-lm"


class _Printer:
    """A pickle that would call ``print("x")`` when loaded: harmless, but code all the same."""

    def __reduce__(self):
        return (print, ("x",))


def test_bin_with_code_is_one_line_on_the_command_line(tmp_path, capsys):
    """The refusal names the file and the object, in one line, without PyTorch's advice to turn
    the check off or its terminal colour codes."""
    from lmatlas.cli import main

    from .reference import default_model_path

    folder = tmp_path / "model"
    shutil.copytree(default_model_path(), folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(2, 2), "x": _Printer()}, folder / "pytorch_model.bin")
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    code = main(["embed", "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.npy"), "--model", str(folder)])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and not (tmp_path / "out.npy").exists()
    assert err == (
        f"lmatlas: error: {folder / 'pytorch_model.bin'}: holds pickled objects other than tensors (builtins.print), "
        "which lmatlas does not load\n"
    )
    assert "\x1b" not in err and "weights_only" not in err
