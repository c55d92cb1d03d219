"""The presets: one complete ``Preset`` per family, whose names agree with transformers'."""

from __future__ import annotations

import importlib

import pytest
import transformers
from transformers import CONFIG_MAPPING
from transformers.models.auto import modeling_auto

from lmatlas import LmatlasError, presets
from lmatlas.heads import HEADS
from lmatlas.presets import Preset, head_from_architectures, preset_for
from lmatlas.save import architecture_name

MODEL_TYPES = presets.model_types()

# transformers' auto-class table of each lmatlas head.
AUTO_CLASSES = {
    "base": modeling_auto.MODEL_MAPPING_NAMES,
    "masked-lm": modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    "sequence-classification": modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    "token-classification": modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
    "question-answering": modeling_auto.MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
    "replaced-token-detection": modeling_auto.MODEL_FOR_PRETRAINING_MAPPING_NAMES,
    "causal-lm": modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    "seq2seq-lm": modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    "image-classification": modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    "multiple-choice": modeling_auto.MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES,
    # SQuAD 2.0's beam head: no auto class builds it (their question answering is the simple head).
    "question-answering-beam": {"xlnet": transformers.XLNetForQuestionAnswering.__name__},
}
# Families that read images (and CLIP's text tower) or trajectories: no language-model head.
VISION_FAMILIES = {"vit", "clip", "swin", "decision_transformer"}


def test_families_are_registered_once():
    assert len(MODEL_TYPES) == len(set(MODEL_TYPES)) >= 19
    for model_type in MODEL_TYPES:
        preset = preset_for(model_type)
        assert isinstance(preset, Preset)
        assert model_type in preset.model_types
        assert importlib.import_module(f"lmatlas.presets.{preset.name}").PRESET is preset


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_preset_is_complete(model_type):
    from lmatlas.tokenizer import FAMILIES

    preset = preset_for(model_type)
    assert model_type in CONFIG_MAPPING
    assert preset.skeleton in ("encoder", "decoder", "encoder-decoder")
    assert presets.skeleton(model_type) == preset.skeleton
    assert isinstance(preset.prefix, str)
    assert preset.head_names() <= set(HEADS)
    assert all(callable(f) for f in (preset.config, preset.weights, preset.to_hf))
    assert preset.ties is None or callable(preset.ties)
    # Every head names a class; the family's own LM head is the one its skeleton generates with.
    for head in preset.head_names():
        assert architecture_name(model_type, head)
    lm = {"encoder": "masked-lm", "decoder": "causal-lm", "encoder-decoder": "seq2seq-lm"}[preset.skeleton]
    assert lm in preset.head_names() or preset.name in VISION_FAMILIES
    family = presets.tokenizer_family(model_type)
    assert family is None or family in FAMILIES


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_architecture_names_are_transformers_classes(model_type):
    """The class each head is saved as is the one transformers' auto classes build for it, and
    reading it back gives the same head."""
    preset = preset_for(model_type)
    for head in sorted(preset.head_names()):
        name = architecture_name(model_type, head)
        if head in ("projection", "encoder"):
            # CLIP's towers with their projection, T5's encoder alone: no auto class builds them
            assert hasattr(transformers, name) or (model_type, head) == ("clip", "projection"), name
        else:
            assert AUTO_CLASSES[head].get(model_type) == name, (model_type, head)
        if head != "base":
            assert head_from_architectures(preset, [name], "config.json") == head


def test_unknown_model_type_lists_the_known_ones():
    with pytest.raises(LmatlasError) as e:
        preset_for("gpt3", "m/config.json")
    message = str(e.value)
    assert message.startswith("m/config.json: model_type 'gpt3' is not supported")
    assert all(t in message for t in MODEL_TYPES)
    with pytest.raises(LmatlasError, match="'gpt3' has no Hugging Face format") as e:
        architecture_name("gpt3", "causal-lm")
    assert all(t in str(e.value) for t in MODEL_TYPES)


def test_accessors_of_an_unknown_model_type():
    assert presets.tokenizer_family("gptj") is None
    assert presets.skeleton("gptj") is None


@pytest.mark.parametrize("config_class,shared", [("AlbertConfig", True), ("BertConfig", False)])
def test_cross_layer_sharing_is_a_switch_of_the_albert_preset(config_class, shared):
    """ALBERT shares its layers across depth even with one group of one block (its defaults)."""
    hf = getattr(transformers, config_class)().to_dict()
    assert hf.get("num_hidden_groups", 1) == 1 and hf.get("inner_group_num", 1) == 1
    cfg = preset_for(hf["model_type"]).config(hf, "base")
    assert cfg.cross_layer_sharing is shared
