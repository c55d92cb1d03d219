"""Every preset's weight map walked backwards: a transformers checkpoint, loaded by lmatlas and
saved again, gives transformers back exactly the same tensors (fine-tuned checkpoints of every
family save correctly, fused, transposed and interleaved layouts included)."""

from __future__ import annotations

import pytest
import torch

import lmatlas
from lmatlas.save import save_model

from . import test_parity_decoders as dec
from . import test_parity_encoders as enc
from . import test_parity_seq2seq as s2s
from .reference import transformers

CASES = (
    [("encoder", f, h) for f, spec in enc.FAMILIES.items() for h in spec["classes"]]
    + [("decoder", v, h) for v in dec.VARIANTS for h in ("causal-lm", "base", "sequence-classification")]
    + [("seq2seq", v, h) for v in s2s.VARIANTS for h in ("seq2seq-lm", "base")]
)


def _reference(kind: str, name: str, head: str):
    if kind == "encoder":
        return enc.build_reference(name, head)
    return (dec if kind == "decoder" else s2s).build_reference(name, head)


@pytest.mark.parametrize("kind,name,head", CASES, ids=[f"{n}-{h}" for _, n, h in CASES])
def test_resaved_checkpoint_is_the_same_for_transformers(tmp_path, kind, name, head):
    transformers()
    ref = _reference(kind, name, head)
    ref.save_pretrained(tmp_path / "theirs")
    model = lmatlas.load(tmp_path / "theirs", head=head)
    save_model(model, tmp_path / "ours")
    again, info = type(ref).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    expected, got = ref.state_dict(), again.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert again.config.architectures == ref.config.architectures
