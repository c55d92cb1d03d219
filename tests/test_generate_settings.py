"""The one rule of precedence for generation settings (``generation.settings.resolve``): the global
defaults, a pipeline's defaults, the model's generation_config.json, the call's arguments — as
transformers' ``_prepare_generation_config`` orders them for ``generate()`` and for its pipelines,
on a tiny GPT-2 whose generation_config.json sets several settings."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

import lmatlas
from lmatlas.generation import GenerationSettings, resolve
from lmatlas.generation.settings import GLOBAL
from lmatlas.pipelines.generation import PIPELINE_DEFAULTS as TEXT_DEFAULTS
from lmatlas.pipelines.seq2seq import PIPELINE_DEFAULTS as SEQ2SEQ_DEFAULTS

from .helpers_pipelines import hf_pipeline
from .paths import data_file
from .reference import transformers

# The model's own settings: some differ from both the global and the pipelines' defaults.
SAVED = dict(max_length=30, do_sample=True, temperature=0.9, top_k=7, repetition_penalty=1.3, num_beams=3,
             no_repeat_ngram_size=2)  # fmt: skip
CALLS = [{}, {"num_beams": 2}, {"temperature": 0.5, "max_new_tokens": 4}, {"top_k": None, "do_sample": False}]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    tf = transformers()
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50257, n_positions=64, n_embd=16, n_layer=1, n_head=2)).eval()
    for key, value in SAVED.items():
        setattr(model.generation_config, key, value)
    folder = tmp_path_factory.mktemp("settings") / "gpt2"
    model.save_pretrained(folder)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(data_file("gpt2-tokenizer", f), folder / f)
    assert json.loads((folder / "generation_config.json").read_text())["num_beams"] == 3
    return folder, tf.GPT2LMHeadModel.from_pretrained(folder).eval(), lmatlas.load(folder)


def _same(ours: dict, theirs) -> None:
    for key in GLOBAL:
        assert ours[key] == getattr(theirs, key), key


@pytest.mark.parametrize("call", range(len(CALLS)))
def test_generate_takes_the_model_settings_then_the_call(gpt2, call):
    _, hf, ours = gpt2
    kwargs = CALLS[call]
    expected, _ = hf._prepare_generation_config(None, **kwargs)
    _same(resolve(ours, kwargs), expected)
    assert resolve(ours, kwargs) == vars(GenerationSettings.resolve(ours, kwargs))


@pytest.mark.parametrize("base", [TEXT_DEFAULTS, SEQ2SEQ_DEFAULTS])
@pytest.mark.parametrize("call", range(len(CALLS)))
def test_a_pipeline_puts_its_defaults_under_the_model_settings(gpt2, base, call):
    """transformers' pipelines: _prepare_generation_config(their defaults, use_model_defaults=True)."""
    _, hf, ours = gpt2
    kwargs = CALLS[call]
    tf = transformers()
    expected, _ = hf._prepare_generation_config(tf.GenerationConfig(**base), use_model_defaults=True, **kwargs)
    _same(resolve(ours, kwargs, base=base), expected)


def test_the_pipeline_and_generate_agree(gpt2):
    """The text-generation pipeline's settings are transformers' pipeline's; handed to generate(),
    they stay as they are, and a call's argument beats the model's and the pipeline's."""
    folder, _, _ = gpt2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = hf_pipeline("text-generation", folder)
    ours = lmatlas.pipeline("text-generation", folder)
    _same(ours.defaults, hf.generation_config)
    assert ours.defaults["num_beams"] == 3 and ours.defaults["max_new_tokens"] is None  # the model's length
    assert vars(GenerationSettings.resolve(ours.model, ours.defaults)) == ours.defaults
    called = {**ours.defaults, "num_beams": 2}
    assert GenerationSettings.resolve(ours.model, called).num_beams == 2


def test_generate_with_a_generation_config(gpt2):
    """generate(generation_config=...) is a base under the model's settings, as in transformers;
    the call's arguments beat both."""
    _, hf, ours = gpt2
    tf = transformers()
    base = {"max_new_tokens": 5, "num_beams": 2, "top_k": 3}
    expected, _ = hf._prepare_generation_config(tf.GenerationConfig(**base), do_sample=False)
    got = GenerationSettings.resolve(ours, {"do_sample": False}, base)
    _same(vars(got), expected)
    assert (got.num_beams, got.top_k, got.max_length, got.do_sample) == (2, 3, 30, False)
    ids = torch.tensor([[464, 2068, 7586, 21831]])
    with torch.no_grad():
        reference = hf.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=50256,
                                generation_config=tf.GenerationConfig(**base), do_sample=False)  # fmt: skip
    assert ours.generate(ids, generation_config=base, do_sample=False).tolist() == reference.tolist()
    with pytest.raises(lmatlas.LmatlasError, match="generation_config got unknown argument"):
        ours.generate(ids, generation_config={"beams": 2})
