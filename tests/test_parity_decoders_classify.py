"""Decoder sequence classifiers (``*ForSequenceClassification``) against transformers.

Every decoder variant of ``test_parity_decoders`` with its classifier head, saved by
transformers as safetensors with random weights: each row is read at its last token that is not
the pad token, with right or left padding, with pad tokens inside the text, and without a pad
token at all (one sequence at a time, as transformers allows).
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

import lmatlas
from lmatlas.heads import last_token

from . import test_parity_decoders as dec
from .reference import save_reference
from .test_parity_decoders import saved  # noqa: F401  (a fixture)

HEAD = "sequence-classification"
TOL = dec.TOL


def _compare(ref, ours, ids, mask, **kwargs) -> float:
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, **kwargs).logits
        got = ours(input_ids=ids, attention_mask=mask, **kwargs).logits
    assert got.shape == expected.shape == (ids.shape[0], len(dec.CLASSIFIER["id2label"]))
    return (got - expected).abs().max().item()


def pad_inside_batch():
    """Pad tokens that are part of the text (attended): the row is read before its last ones."""
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(3, dec.VOCAB, (3, 11), generator=gen)
    mask = torch.ones_like(ids)
    ids[0, -2:] = dec.PAD  # the text itself ends in two pad tokens
    ids[1, 4] = dec.PAD  # one in the middle, then right padding
    ids[1, 8:] = dec.PAD
    mask[1, 8:] = 0
    ids[2, 5:] = dec.PAD  # a real pad token at the end of the text, then padding
    mask[2, 6:] = 0
    return ids, mask


BATCHES = {"right": dec.right_padded_batch, "left": dec.left_padded_batch, "pad-inside": pad_inside_batch}


@pytest.mark.parametrize("padding", list(BATCHES))
@pytest.mark.parametrize("variant", list(dec.VARIANTS))
def test_parity(variant, padding, saved):  # noqa: F811
    ref, ours = saved(variant, HEAD)
    assert ours.head_name == HEAD
    assert ours.config.id2label == dec.CLASSIFIER["id2label"]
    diff = _compare(ref, ours, *BATCHES[padding]())
    assert diff <= TOL, f"{variant} ({padding} padding): max abs diff {diff:.2e}"


# transformers' BLOOM and Falcon classifiers take no position ids (the default left-padded case
# covers them).
POSITIONED = [v for v in dec.VARIANTS if not v.startswith(("bloom", "falcon"))]


@pytest.mark.parametrize("variant", POSITIONED)
def test_parity_left_padded_with_positions_from_the_mask(variant, saved):  # noqa: F811
    """Left-padded rows counted from their first real token, as batched generation does."""
    ref, ours = saved(variant, HEAD)
    assert "position_ids" in inspect.signature(ref.forward).parameters
    ids, mask = dec.left_padded_batch()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    diff = _compare(ref, ours, ids, mask, position_ids=positions)
    assert diff <= TOL, f"{variant}: max abs diff {diff:.2e}"


def test_without_a_pad_token_one_sequence_is_read_at_its_end(tmp_path):
    """No pad_token_id: transformers reads a batch of one at its last position and refuses more."""
    ref = dec.build_reference("gpt2", HEAD, pad_token_id=None)
    save_reference(ref, tmp_path)
    ours = lmatlas.load(tmp_path)
    assert ours.config.pad_token_id is None
    ids, _ = dec.right_padded_batch()
    ids[0, 5] = dec.PAD  # token 0 is an ordinary token here
    one = ids[:1]
    diff = _compare(ref, ours, one, torch.ones_like(one))
    assert diff <= TOL, f"max abs diff {diff:.2e}"
    with pytest.raises(ValueError, match="padding token"):
        ref(input_ids=ids[:2])
    with pytest.raises(lmatlas.LmatlasError, match="pad_token_id"):
        ours(input_ids=ids[:2])


def test_last_token_positions():
    ids = torch.tensor([[5, 6, 7, 0, 0], [0, 0, 5, 6, 7], [0, 0, 0, 0, 0], [5, 0, 6, 0, 0], [5, 6, 7, 8, 9]])
    assert last_token(ids, 0).tolist() == [2, 4, 0, 2, 4]
    assert last_token(ids[:1], None).tolist() == [4]
    with pytest.raises(lmatlas.LmatlasError):
        last_token(ids, None)


def test_classifier_does_not_generate(saved):  # noqa: F811
    _, ours = saved("gpt2", HEAD)
    ids, mask = dec.right_padded_batch()
    with pytest.raises(lmatlas.LmatlasError, match="logits_to_keep"):
        ours(ids, attention_mask=mask, logits_to_keep=1)
    with pytest.raises(lmatlas.LmatlasError, match="causal-lm head"):
        ours.generate(ids[:1], max_new_tokens=2)


def test_language_model_checkpoint_loads_with_a_fresh_classifier(saved, tmp_path):  # noqa: F811
    """A causal-LM checkpoint read for fine-tuning: same backbone, a new score layer (warned)."""
    ref, lm = saved("llama-gqa")
    folder = tmp_path / "lm"
    save_reference(ref, folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = lmatlas.load(folder, head=HEAD)
    assert any("head.out.weight" in str(w.message) for w in caught)
    assert model.head.out.weight.shape == (2, 48)
    for name, p in lm.backbone.state_dict().items():
        assert torch.equal(p, model.backbone.state_dict()[name]), name
