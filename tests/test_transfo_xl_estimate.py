"""Transformer-XL's parameter count: the estimate's arithmetic on a shape and the exact count of a
folder's files, each equal to transformers' ``num_parameters()`` (adaptive embeddings and
softmax, ties and all); and the catalogue's entry, which points at the preset."""

from __future__ import annotations

import json

import pytest
import torch

import lmatlas
from lmatlas.catalog import architecture_preset, find
from lmatlas.cli import main
from lmatlas.estimate import count_params, estimate, folder_params, shape_of
from lmatlas.presets import preset_for

from .reference import transformers
from .reference_transfo_xl import model_class
from .test_parity_transfo_xl import CLASSES, VARIANTS, saved_txl  # noqa: F401


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shape_count_equals_transformers(variant):
    config = transformers().TransfoXLConfig(**VARIANTS[variant])
    with torch.device("meta"):
        expected = model_class("TransfoXLLMHeadModel")(config).num_parameters()
    cfg = preset_for("transfo-xl").config(config.to_dict(), "causal-lm")
    assert count_params(shape_of(cfg)).total == expected


@pytest.mark.parametrize("variant,head,safe", [("div2", "causal-lm", True), ("div1-pre-shared", "causal-lm", False),
                                               ("div1-untied", "causal-lm", True), ("div3-own-projections", "base", True),
                                               ("no-memory", "sequence-classification", True)])
def test_folder_count_equals_transformers(variant, head, safe, saved_txl):
    ref, folder = saved_txl(variant, head, safe=safe, folder=True)
    assert folder_params(folder) == ref.num_parameters() == lmatlas.load(folder).num_parameters()
    e = estimate(folder, bandwidth=10e9)
    assert e.params == ref.num_parameters() and e.params_exact
    # The memory per token: one hidden state per layer (not keys and values).
    assert e.kv_cache_bytes_per_token == 2 * 18 * 2
    assert any("keeps a memory instead of keys and values" in n for n in e.notes)


@pytest.mark.parametrize("name", ["transfo-xl-wt103", "transfo-xl-lm1b"])
def test_presets_count_as_transformers_builds_them(name, capsys):
    """The released WikiText-103 model's config (transformers' defaults) and the One Billion Word
    model of the paper, built by transformers on the meta device."""
    c = architecture_preset(name).config
    config = transformers().TransfoXLConfig(
        vocab_size=c.vocab_size, d_model=c.hidden_size, d_embed=c.embedding_size, n_head=c.num_heads,
        d_head=c.head_dim, d_inner=c.intermediate_size, n_layer=c.num_layers, cutoffs=c.adaptive_cutoffs,
        div_val=c.adaptive_div, proj_share_all_but_first=c.tie_projections[1])
    with torch.device("meta"):
        expected = model_class("TransfoXLLMHeadModel")(config).num_parameters()
    assert main(["estimate", name, "--json", "--bandwidth", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == expected
    if name == "transfo-xl-wt103":
        assert expected == architecture_preset(name).checkpoint_params


def test_catalogue_entry_points_at_the_preset():
    m = find("TransfoXL")
    assert m.name == "Transformer-XL" and m.lmatlas.preset == "transfo-xl"
    assert preset_for(m.lmatlas.preset).name == "transfo_xl"
    assert m.lmatlas.architectures[0] == "transfo-xl-lm1b"
    assert abs(count_params(architecture_preset("transfo-xl-lm1b")).total / m.params - 1) < 0.06


def test_a_small_vocabulary_keeps_the_cutoffs_inside_it():
    """Built at a reduced size for training: cutoffs past the vocabulary are dropped."""
    cfg = architecture_preset("transfo-xl-wt103", vocab_size=30000, hidden_size=64, num_heads=4, num_layers=2).config
    assert cfg.adaptive_cutoffs == [20000] and cfg.tie_projections == [False, True] and cfg.head_dim == 16
    assert architecture_preset("transfo-xl-wt103", vocab_size=65).config.adaptive_cutoffs == []
