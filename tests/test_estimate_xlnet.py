"""XLNet in the catalogue and `lmatlas estimate`: its presets count the parameters transformers
builds (on the meta device: no memory), a folder counts its weights exactly."""

from __future__ import annotations

import json

import pytest
import torch

from lmatlas.catalog import architecture_preset, lookup
from lmatlas.cli import main
from lmatlas.estimate import count_params, folder_params, folder_shape

from .reference import save_reference, transformers


def _twin(name: str):
    """transformers' XLNetModel of a preset's shape, on the meta device."""
    c = architecture_preset(name).config
    config = transformers().XLNetConfig(vocab_size=c.vocab_size, d_model=c.hidden_size, n_layer=c.num_layers,
                                        n_head=c.num_heads, d_inner=c.intermediate_size)
    with torch.device("meta"):
        return transformers().XLNetModel(config)


@pytest.mark.parametrize("name", ["xlnet-base-cased", "xlnet-large-cased"])
def test_presets_count_what_transformers_builds(name):
    assert count_params(architecture_preset(name)).total == _twin(name).num_parameters()


def test_catalogue_row_points_at_the_preset(capsys):
    model = lookup("XLNet")
    assert model.lmatlas.preset == "xlnet" and model.lmatlas.architectures[0] == "xlnet-large-cased"
    assert main(["estimate", "XLNet", "--json", "--bandwidth", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == _twin("xlnet-large-cased").num_parameters() == 360_268_800
    assert main(["estimate", "xlnet-base-cased", "--json", "--bandwidth", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 116_718_336


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_folder_counts_exactly(tmp_path, safe):
    tf = transformers()
    config = tf.XLNetConfig(vocab_size=301, d_model=24, n_layer=2, n_head=3, d_inner=37)
    model = tf.XLNetLMHeadModel(config)
    save_reference(model, tmp_path, safe)
    assert folder_params(tmp_path) == model.num_parameters()  # the tied lm_loss counted once
    shape, notes = folder_shape(tmp_path)
    assert not notes and count_params(shape).total == model.transformer.num_parameters()
