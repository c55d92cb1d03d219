"""Training from Python: typed recipes and ``lmatlas.training.train``, without the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmatlas import LmatlasError
from lmatlas.cli import main
from lmatlas.training import (
    CausalLMRecipe,
    ClassifyRecipe,
    DenoisingRecipe,
    MaskedLMRecipe,
    TrainConfig,
    train,
)

from .paths import data_file

TINY = dict(num_layers=1, num_heads=2, hidden_size=16, block=16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    text = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:8000]
    path = tmp_path_factory.mktemp("data") / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _config(out: Path, **fields) -> TrainConfig:
    return TrainConfig(out=out, **{"steps": 3, "batch_size": 4, "progress": False, "seed": 5, **fields})


def _train_losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def test_a_causal_lm_recipe_trains_as_the_command_does(corpus, tmp_path):
    recipe = CausalLMRecipe(model="gpt2", data=[corpus], tokenizer="char", eval_windows=4, **TINY)
    summary = train(recipe, _config(tmp_path / "python"))
    assert summary["steps"] == 3 and summary["metric"] == "loss"
    assert (tmp_path / "python" / "model" / "config.json").is_file()
    # The command only maps its flags to the recipe's fields: the same run, the same losses.
    assert main(["train", "gpt", "--model", "gpt2", "--layers", "1", "--heads", "2", "--dim", "16", "--block", "16",
                 "--tokenizer", "char", "--data", str(corpus), "--out", str(tmp_path / "cli"), "--eval-windows", "4",
                 "--steps", "3", "--batch-size", "4", "--no-progress", "--seed", "5", "--log-every", "10"]) == 0
    assert _train_losses(tmp_path / "python") == _train_losses(tmp_path / "cli")


def test_masked_lm_and_denoising_recipes_train(corpus, tmp_path):
    mlm = MaskedLMRecipe(model="bert-base", data=[corpus], tokenizer="char", whole_word=True, eval_windows=4, **TINY)
    assert train(mlm, _config(tmp_path / "mlm"))["metric"] == "loss"
    bart = DenoisingRecipe(model="bart-base", data=[corpus], tokenizer="char", eval_windows=4, **TINY)
    train(bart, _config(tmp_path / "bart"))
    saved = json.loads((tmp_path / "bart" / "model" / "config.json").read_text())
    assert saved["model_type"] == "bart" and saved["encoder_layers"] == 1
    assert len(_train_losses(tmp_path / "bart")) == 3


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda d: CausalLMRecipe(model="gpt2", data=[d], block=1), "block"),
        (lambda d: CausalLMRecipe(model="gpt2", data=str(d)), "data"),
        (lambda d: MaskedLMRecipe(model="bert-base", data=[d], mask_probability=1.5), "mask_probability"),
        (lambda d: ClassifyRecipe(train=d, max_length=4), "max_length"),
        (lambda d: TrainConfig(out=d.parent, lr=-1.0), "lr"),
        (lambda d: TrainConfig(out=d.parent, batch_size=0), "batch_size"),
    ],
)
def test_a_bad_field_is_named(corpus, make, field):
    with pytest.raises(LmatlasError, match=rf"^{field} must be"):
        make(corpus)


def test_errors_found_while_training_name_the_field(corpus, tmp_path):
    recipe = CausalLMRecipe(model="gpt2", data=[corpus], tokenizer="char", **{**TINY, "block": 9000})
    with pytest.raises(LmatlasError, match="fewer than one block of 9001; give more text or a smaller block$"):
        train(recipe, _config(tmp_path / "long"))
    with pytest.raises(LmatlasError, match="tokenizer is needed to train gpt2 from scratch"):
        train(CausalLMRecipe(model="gpt2", data=[corpus], **TINY), _config(tmp_path / "none"))


def test_the_command_names_the_flag_of_a_field(corpus, tmp_path, capsys):
    base = ["train", "gpt", "--model", "gpt2", "--tokenizer", "char", "--data", str(corpus), "--out", str(tmp_path)]
    assert main(base + ["--block", "1"]) == 1
    assert "--block must be at least 2, not 1" in capsys.readouterr().err
    assert main(base + ["--lr", "-1"]) == 1
    assert "--lr must be positive" in capsys.readouterr().err
    assert main(["train", "bert", *base[2:], "--mask-prob", "2"]) == 1
    assert "--mask-prob must be between 0 and 1" in capsys.readouterr().err
