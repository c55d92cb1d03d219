"""An encoder-decoder's encoder alone — transformers' ``T5EncoderModel`` and
``SwitchTransformersEncoderModel`` (sentence-T5's backbone) — against transformers, on the
checkpoints of ``test_parity_seq2seq``: hidden states of padded sources, the Switch encoder's
router losses, and the way back out."""

from __future__ import annotations

import pytest
import torch

import lmatlas
from lmatlas.errors import LmatlasError
from lmatlas.moe import router_losses, sparse_stacks
from lmatlas.save import save_model

from .reference import transformers
from .test_parity_seq2seq import TOL, padded_sources, saved_seq2seq  # noqa: F401  (a fixture)

VARIANTS = ["t5", "t5-v1.1", "switch", "switch-overflow"]


def _hidden(model, ids, mask):
    with torch.no_grad():
        if isinstance(model, lmatlas.model.LmatlasModel):
            return model(ids, attention_mask=mask).last_hidden_state
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_model(variant, saved_seq2seq):
    ref, ours = saved_seq2seq(variant, "encoder")
    assert ours.head_name == "encoder" and not ours.is_encoder_decoder
    # only the encoder's parameters: as many as transformers' class holds
    assert ours.num_parameters() == ref.num_parameters()
    ids, mask = padded_sources(variant)
    got, want = _hidden(ours, ids, mask), _hidden(ref, ids, mask)
    keep = mask.bool()
    assert (got - want)[keep].abs().max() <= TOL


@pytest.mark.parametrize("variant", ["switch", "switch-overflow"])
def test_switch_encoder_router_losses(variant, saved_seq2seq):
    """The encoder's router z-loss and load-balancing loss, from transformers' router outputs and
    its own loss functions."""
    from transformers.models.switch_transformers import modeling_switch_transformers as st

    ref, ours = saved_seq2seq(variant, "encoder")
    ids, mask = padded_sources(variant)
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, output_router_logits=True)
        ours(ids, attention_mask=mask)
    routed = [r for r in out.router_probs if r[0].dim() > 1]  # dense layers report empty tensors
    logits, expert = torch.cat([r[0] for r in routed], 1), torch.cat([r[1] for r in routed], 1)
    z, aux = router_losses(sparse_stacks(ours))
    assert abs(z.item() - float(st.router_z_loss_func(logits))) <= 1e-5
    assert abs(aux.item() - float(st.load_balancing_loss_func(logits.softmax(-1), expert))) <= 1e-5


@pytest.mark.parametrize("variant", ["t5", "switch"])
def test_encoder_model_saves_back(variant, saved_seq2seq, tmp_path):
    ref, ours = saved_seq2seq(variant, "encoder")
    save_model(ours, tmp_path / "saved")
    again = getattr(transformers(), type(ref).__name__).from_pretrained(tmp_path / "saved").eval()
    ids, mask = padded_sources(variant)
    assert torch.equal(_hidden(again, ids, mask), _hidden(ref, ids, mask))


def test_whole_model_read_as_its_encoder(saved_seq2seq):
    """A seq2seq checkpoint loaded with head="encoder" runs its encoder alone, as
    ``T5EncoderModel.from_pretrained`` does with a ``T5ForConditionalGeneration`` folder."""
    ref, folder = saved_seq2seq("t5", folder=True)
    ours = lmatlas.load(folder, head="encoder")
    ids, mask = padded_sources("t5")
    want = ref.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (_hidden(ours, ids, mask) - want)[mask.bool()].abs().max() <= TOL


def test_encoder_takes_no_token_types(saved_seq2seq):
    _, ours = saved_seq2seq("t5", "encoder")
    ids, mask = padded_sources("t5")
    with pytest.raises(LmatlasError, match="not token_type_ids"):
        ours(ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
