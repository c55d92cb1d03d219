"""Transformer-XL's bad inputs: one sentence each, raised as LmatlasError (the CLI prints it)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lmatlas
from lmatlas import LmatlasError
from lmatlas.cli import main
from lmatlas.config import ModelConfig
from lmatlas.model import LmatlasModel

from .test_parity_transfo_xl import VOCAB, ids, saved_txl  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def edited(saved_txl, tmp_path, variant: str = "div2", head: str = "causal-lm", **changes):
    """A copy of a saved checkpoint with config.json changed."""
    _, folder = saved_txl(variant, head, folder=True)
    dst = tmp_path / "edited"
    shutil.copytree(folder, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("changes,message", [
    (dict(attn_type=1), "attn_type 1 is not supported: lmatlas runs Transformer-XL's own relative attention"),
    (dict(sample_softmax=64), "sample_softmax is not supported"),
    (dict(cutoffs=[47, 13]), r"cutoffs \[47, 13\] must rise strictly between 0 and vocab_size \(101\)"),
    (dict(cutoffs=[13, 101]), r"cutoffs \[13, 101\] must rise strictly"),
    (dict(tie_projs=[False, True, True, True, True]), "tie_projs names 5 clusters, but the cutoffs make 3"),
    (dict(d_model=17), "the model width 17 must be even"),
    (dict(mem_len=-4), "mem_len must be a number of tokens, 0 or more, not -4"),
])  # fmt: skip
def test_bad_config(changes, message, saved_txl, tmp_path):
    with pytest.raises(LmatlasError, match=message):
        lmatlas.load(edited(saved_txl, tmp_path, **changes))


def test_classifier_needs_d_embed_equal_to_d_model(saved_txl, tmp_path):
    folder = edited(saved_txl, tmp_path, head="sequence-classification", d_embed=14)
    with pytest.raises(LmatlasError, match=r"scores states of width d_embed \(14\), but the model's are d_model \(18\)"):
        lmatlas.load(folder)


def test_the_cli_says_it_in_one_line(saved_txl, tmp_path, capsys):
    folder = edited(saved_txl, tmp_path, attn_type=2)
    assert main(["run", "text-generation", "-m", str(folder), "hello"]) != 0
    err = capsys.readouterr().err.strip()
    assert "attn_type 2 is not supported" in err and len(err.splitlines()) == 1 and "Traceback" not in err


def _mems(model, rows=3, length=6):
    with torch.no_grad():
        return model(ids(rows=rows)).mems


@pytest.mark.parametrize("bad,message", [
    (lambda m: m[:1], r"mems must be a list of 2 tensors \(one per layer\) of shape \(length, 3, 18\), as the model "
                      "returns them; got 1 items"),
    (lambda m: m[0], "mems must be a list of 2 tensors .* got Tensor"),
    (lambda m: [x[:, :2] for x in m], r"got shapes \[\(6, 2, 18\), \(6, 2, 18\)\]"),
    (lambda m: [x[..., :10] for x in m], r"every layer of one length; got shapes \[\(6, 3, 10\)"),
    (lambda m: [m[0], m[1][:4]], r"every layer of one length; got shapes \[\(6, 3, 18\), \(4, 3, 18\)\]"),
    (lambda m: [m[0][0], m[1][0]], r"got shapes \[\(3, 18\), \(3, 18\)\]"),
])  # fmt: skip
def test_bad_mems(bad, message, saved_txl):
    _, model = saved_txl("div2")
    with pytest.raises(LmatlasError, match=message):
        model(ids(rows=3, length=4), mems=bad(_mems(model)))


def test_mems_for_a_model_without_memory():
    cfg = ModelConfig(model_type="gpt2", vocab_size=11, hidden_size=8, num_layers=1, num_heads=2,
                      intermediate_size=16, causal=True)
    gpt = LmatlasModel(cfg, "causal-lm").eval()
    with pytest.raises(LmatlasError, match="mems are Transformer-XL's memory \(and XLNet's\); this gpt2 model keeps none"):
        gpt(torch.ones(1, 3, dtype=torch.long), mems=[torch.zeros(1, 1, 8)])
    with pytest.raises(LmatlasError, match="labels are read by Transformer-XL's adaptive softmax head"):
        gpt(torch.ones(1, 3, dtype=torch.long), labels=torch.ones(1, 3, dtype=torch.long))


def test_padding(saved_txl):
    """Right padding is harmless (no token attends to the ones after it); left padding, and any
    padding once a memory is carried, is refused."""
    _, model = saved_txl("div2")
    x = ids(rows=2, length=7)
    mask = torch.ones_like(x)
    mask[1, 4:] = 0
    with torch.no_grad():
        padded = model(x, attention_mask=mask).prediction_scores
        alone = model(x[1:, :4]).prediction_scores
    assert (padded[1, :4] - alone[0]).abs().max().item() <= 1e-5
    left = mask.flip(-1)
    with pytest.raises(LmatlasError, match="Transformer-XL reads no attention mask .* pad on the right only"):
        model(x, attention_mask=left)
    cache = model.new_cache(2, 20)
    model(x, cache=cache)
    with pytest.raises(LmatlasError, match="never into a memory"):
        model(x[:, :1], attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1), cache=cache)
    with pytest.raises(LmatlasError, match="give mems or a cache, not both"):
        model(x[:, :1], cache=cache, mems=cache.mems)


def test_same_length_without_memory(saved_txl, tmp_path):
    model = lmatlas.load(edited(saved_txl, tmp_path, mem_len=0, same_length=True))
    with pytest.raises(LmatlasError, match="same_length needs a memory: with mem_len 0 no token would have a key"):
        model(ids())


def test_bad_labels_and_ids(saved_txl):
    _, model = saved_txl("div2")
    x = ids()
    with pytest.raises(LmatlasError, match=r"labels must be token ids of the input's shape \(3, 9\), not \(3, 8\)"):
        model(x, labels=x[:, :-1])
    with pytest.raises(LmatlasError, match="labels need at least two positions"):
        model(x[:, :1], labels=x[:, :1])
    with pytest.raises(LmatlasError, match=r"labels hold a token id outside the vocabulary \(0..100\)"):
        model(x, labels=x + 200)
    with pytest.raises(LmatlasError, match=r"input_ids holds a token id outside the vocabulary \(0..100\)"):
        model(x + VOCAB)


def test_the_server_refuses_a_memory(saved_txl):
    from lmatlas.serve.engine import Engine

    _, model = saved_txl("div2")
    with pytest.raises(LmatlasError, match="Transformer-XL keeps a memory instead"):
        Engine(model, tokenizer=None)
