"""XLNet's bad inputs: each one sentence (an LmatlasError) naming the argument or field."""

from __future__ import annotations

import json

import pytest
import torch

import lmatlas
from lmatlas.config import ModelConfig
from lmatlas.model import LmatlasModel
from lmatlas.presets import preset_for

from .reference import transformers

VOCAB, D, LAYERS = 97, 24, 2


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tf = transformers()
    out = {}
    for head, cls, extra in (("lm", "XLNetLMHeadModel", {}), ("beam", "XLNetForQuestionAnswering", {}),
                             ("choice", "XLNetForMultipleChoice", {}), ("bi_data", "XLNetModel", {"bi_data": True})):
        config = tf.XLNetConfig(vocab_size=VOCAB, d_model=D, n_layer=LAYERS, n_head=3, d_inner=30, pad_token_id=5,
                                **extra)
        folder = tmp_path_factory.mktemp(head)
        getattr(tf, cls)(config).save_pretrained(folder)
        out[head] = lmatlas.load(folder)
    return out


def message(fn, *args, **kwargs) -> str:
    with pytest.raises(lmatlas.LmatlasError) as e:
        fn(*args, **kwargs)
    text = str(e.value)
    assert "\n" not in text
    return text


IDS = torch.randint(6, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kwargs,expected", [
    (dict(perm_mask=torch.zeros(2, 7, 6)), "perm_mask must be (batch, length, length) = (2, 7, 7), not (2, 7, 6)"),
    (dict(perm_mask=torch.zeros(7, 7)), "perm_mask must be (batch, length, length)"),
    (dict(target_mapping=torch.zeros(2, 7)), "target_mapping must be (batch, predictions, length) = (2, n, 7)"),
    (dict(target_mapping=torch.zeros(2, 1, 8)), "target_mapping must be (batch, predictions, length)"),
    (dict(target_mapping=torch.zeros(2, 0, 7)), "target_mapping must be"),
    (dict(mems=[torch.zeros(3, 2, D)]), "mems must be 2 tensors (one per layer)"),
    (dict(mems=torch.zeros(3, 2, D)), "mems must be 2 tensors (one per layer)"),
    (dict(mems=[torch.zeros(3, 2, D), torch.zeros(3, 1, D)]), f"mems[1] must be (memory length, 2, {D}), not (3, 1, {D})"),
    (dict(mems=[torch.zeros(3, 2, D), torch.zeros(4, 2, D)]), "mems[1] holds 4 states, mems[0] 3"),
    (dict(mems=[torch.zeros(2, 3, D)] * 2), f"mems[0] must be (memory length, 2, {D}), not (2, 3, {D})"),
    (dict(attention_mask=torch.ones(2, 7), input_mask=torch.zeros(2, 7)), "give attention_mask (1 on tokens) or input_mask"),
    (dict(attention_mask=torch.ones(2, 6)), "attention_mask must be (batch, length) = (2, 7) as input_ids"),
    (dict(token_type_ids=torch.zeros(1, 7, dtype=torch.long)), "token_type_ids must be (batch, length)"),
    (dict(position_ids=torch.arange(7)[None]), "XLNet reads the distances between tokens; it takes no position_ids"),
    (dict(labels=IDS), "XLNet (causal-lm head) takes no argument 'labels'"),
    (dict(p_mask=torch.zeros(2, 7)), "takes no argument 'p_mask'"),
    (dict(cache=object()), "decodes with its own memory"),
])
def test_stack_inputs(folders, kwargs, expected):
    assert expected in message(folders["lm"], IDS, **kwargs)


def test_ids(folders):
    assert "outside the vocabulary (0..96)" in message(folders["lm"], torch.tensor([[3, VOCAB]]))
    assert "input_ids is empty" in message(folders["lm"], torch.zeros(1, 0, dtype=torch.long))
    assert "input_ids must be (batch, length) token ids" in message(folders["lm"], IDS[0])


def test_bi_data_needs_an_even_batch(folders):
    assert "give an even batch, not 3" in message(folders["bi_data"], torch.randint(6, VOCAB, (3, 5)))


def test_multiple_choice_inputs(folders):
    assert "(batch, choices, length) for a multiple-choice head" in message(folders["choice"], IDS)
    ids = IDS.view(1, 2, 7)
    assert "attention_mask must be (batch, choices, length) = (1, 2, 7)" in message(
        folders["choice"], ids, attention_mask=torch.ones(2, 7))


def test_beam_question_answering_inputs(folders):
    beam = folders["beam"]
    assert "p_mask must be (batch, length) = (2, 7)" in message(beam, IDS, p_mask=torch.zeros(2, 8))
    assert "takes both start_positions and end_positions" in message(beam, IDS, start_positions=torch.tensor([1, 2]))
    assert "start_positions holds a position outside the sequence (0..6)" in message(
        beam, IDS, start_positions=torch.tensor([1, 9]), end_positions=torch.tensor([2, 3]))
    assert "cls_index must hold one position per sequence (2)" in message(beam, IDS, cls_index=torch.tensor([6]))
    assert "is wider than the sequence (3 tokens)" in message(beam, IDS[:, :3])


def test_other_models_take_no_xlnet_arguments():
    cfg = ModelConfig(model_type="bert", vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                      intermediate_size=20)
    model = LmatlasModel(cfg, "base")
    assert "bert models take no argument 'perm_mask'" in message(model, torch.ones(1, 3, dtype=torch.long),
                                                                   perm_mask=torch.zeros(1, 3, 3))


@pytest.mark.parametrize("fields,expected", [
    (dict(d_model=25, n_head=3), "d_model (25) must be a multiple of n_head (3)"),
    (dict(d_model=24, n_head=3, d_head=6), "d_head (6) must be d_model // n_head (8)"),
    (dict(attn_type="left"), "attn_type must be one of bi, uni, not 'left'"),
    (dict(summary_type="attn"), "summary_type must be one of last, first, mean, cls_index, not 'attn'"),
    (dict(mem_len=-2), "mem_len must be a whole number >= 0 or null, not -2"),
    (dict(start_n_top=0), "start_n_top must be a whole number >= 1, not 0"),
])
def test_config_fields(fields, expected):
    hf = {"model_type": "xlnet", "vocab_size": 50, "d_model": 24, "n_layer": 1, "n_head": 3, **fields}
    assert expected in message(preset_for("xlnet").config, hf, "base")


def test_summary_projected_to_the_labels(tmp_path):
    hf = {"model_type": "xlnet", "vocab_size": 50, "d_model": 24, "n_layer": 1, "n_head": 3,
          "summary_proj_to_labels": True, "num_labels": 3, "architectures": ["XLNetForSequenceClassification"]}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    assert "summary_proj_to_labels makes the summary 3 wide" in message(preset_for("xlnet").config, hf,
                                                                        "sequence-classification")


def test_unknown_setting_in_a_preset_table():
    assert "xlnet settings have no field 'memory'" in message(
        ModelConfig, model_type="xlnet", vocab_size=5, hidden_size=8, num_layers=1, num_heads=2,
        intermediate_size=8, xlnet={"memory": 3})


def test_fine_tuning_refuses_xlnet(tmp_path):
    """Fine-tuning pads on the right, and XLNet's heads read the last position: refused."""
    from lmatlas.training.finetune import load_for_finetuning

    tf = transformers()
    config = tf.XLNetConfig(vocab_size=VOCAB, d_model=D, n_layer=1, n_head=3, d_inner=30)
    tf.XLNetForSequenceClassification(config).save_pretrained(tmp_path)
    assert "is an XLNet, which fine-tuning does not take yet" in message(
        load_for_finetuning, tmp_path, "sequence-classification")
