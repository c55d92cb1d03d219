"""XLNet's permutation language modelling: the masks are factorisation orders, the query stream
never sees what it predicts, and a few hundred steps of a tiny model lower the loss on
Shakespeare (saved in a folder transformers reads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lmatlas
from lmatlas.catalog import architecture_preset
from lmatlas.cli import main
from lmatlas.model import LmatlasModel
from lmatlas.training import objectives as obj
from lmatlas.two_stream import stream_masks

from .paths import data_file
from .reference import transformers


def _draw(rows=40, length=24, k=6, seed=0):
    ids = torch.randint(10, 500, (rows, length), generator=torch.Generator().manual_seed(seed + 100))
    return ids, obj.permutation_lm(ids, k, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("length,k,predicted", [(24, 6, 4), (24, 7, 3), (32, 6, 5), (10, 1, 10), (9, 100, 1)])
def test_number_of_predictions_follows_k(length, k, predicted):
    ids, batch = _draw(rows=5, length=length, k=k)
    assert batch["target_mapping"].shape == (5, predicted, length)
    assert batch["labels"].shape == (5, predicted)


def test_masks_are_factorisation_orders():
    """Each row's targets, ordered by how many others they see, see exactly the context and the
    targets before them; no target sees itself; the context sees itself whole and no target."""
    ids, batch = _draw()
    perm, mapping, labels = batch["perm_mask"], batch["target_mapping"], batch["labels"]
    assert torch.equal(batch["input_ids"], ids)  # nothing is masked in the input
    rows, n, t = mapping.shape
    assert torch.equal(mapping.sum(-1), torch.ones(rows, n))  # one position per prediction
    for r in range(rows):
        targets = mapping[r].argmax(-1).tolist()
        assert targets == sorted(set(targets))  # distinct, in position order
        assert labels[r].tolist() == ids[r, targets].tolist()
        context = [j for j in range(t) if j not in targets]
        sees = lambda i: {j for j in range(t) if perm[r, i, j] == 0}  # noqa: E731
        for i in context:
            assert sees(i) == set(context)
        order = sorted(targets, key=lambda i: len(sees(i)))
        for step, i in enumerate(order):
            assert sees(i) == set(context) | set(order[:step]), (r, i)
            assert i not in sees(i)
    # The orders are random: the first target of the order is anywhere.
    firsts = {min(mapping[r].argmax(-1).tolist(), key=lambda i: int((perm[r, i] == 0).sum())) for r in range(rows)}
    assert len(firsts) > t // 2


def test_orders_are_drawn_anew_and_reproducible():
    _, a = _draw(seed=1)
    _, b = _draw(seed=1)
    _, c = _draw(seed=2)
    assert torch.equal(a["perm_mask"], b["perm_mask"]) and not torch.equal(a["perm_mask"], c["perm_mask"])


def test_query_stream_never_sees_itself():
    """The masks the model builds from perm_mask: the query stream of a target does not read its
    own position, the content stream does."""
    _, batch = _draw(rows=3, length=12)
    content, query = stream_masks(12, 0, 3, False, False, None, batch["perm_mask"], torch.float32)
    targets = batch["target_mapping"].argmax(-1)
    for r in range(3):
        for i in targets[r].tolist():
            assert query[r, i, i] == 1 and content[r, i, i] == 0


def test_a_prediction_reads_only_what_comes_before_it():
    """Changing a token a prediction may not see (its own, or a later target's) leaves the
    prediction as it was; changing one before it in the order changes it."""
    cfg = architecture_preset("xlnet-base-cased", vocab_size=500, num_layers=2, num_heads=2, hidden_size=32).config
    torch.manual_seed(0)
    model = LmatlasModel(cfg, "causal-lm").eval()
    ids, batch = _draw(rows=1, length=16, k=4, seed=3)
    perm, mapping = batch["perm_mask"], batch["target_mapping"]
    targets = mapping[0].argmax(-1).tolist()
    with torch.no_grad():
        base = model(ids, perm_mask=perm, target_mapping=mapping).logits
        for m, i in enumerate(targets):
            hidden = [j for j in range(16) if perm[0, i, j] == 1]
            seen = [j for j in range(16) if perm[0, i, j] == 0]
            for j, should_change in ((hidden[0], False), (seen[0], True)):
                changed = ids.clone()
                changed[0, j] = (changed[0, j] + 1) % 500
                out = model(changed, perm_mask=perm, target_mapping=mapping).logits
                differs = not torch.allclose(out[0, m], base[0, m], atol=1e-6)
                assert differs == should_change, (i, j, should_change)


def test_permutation_lm_lowers_the_loss(tmp_path, one_thread):
    text = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:40000]
    corpus = tmp_path / "shakespeare.txt"
    corpus.write_text(text, encoding="utf-8")
    out = tmp_path / "xlnet"
    args = ["train", "xlnet", "--model", "xlnet-base-cased", "--tokenizer", "char", "--data", str(corpus),
            "--out", str(out), "--steps", "200", "--layers", "2", "--heads", "2", "--dim", "32", "--block", "32",
            "--batch-size", "8", "--lr", "3e-3", "--warmup", "10", "--dropout", "0", "--no-progress",
            "--eval-windows", "16", "--seed", "3", "--partial-k", "6"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in records if r["split"] == "train"]
    first, last = sum(train[:10]) / 10, sum(train[-10:]) / 10
    assert last < 0.85 * first, (first, last)
    dev = [r for r in records if r["split"] == "dev"][-1]
    assert dev["loss"] < 3.2  # below the characters' unigram entropy (~3.3 nats): it reads its context
    model = lmatlas.load(out / "model")
    assert model.head_name == "causal-lm" and model.config.xlnet is not None
    ref = transformers().XLNetLMHeadModel.from_pretrained(out / "model").eval()
    ids, batch = _draw(rows=2, length=16, k=6)
    ids = ids % model.config.vocab_size
    with torch.no_grad():
        e = ref(ids, perm_mask=batch["perm_mask"], target_mapping=batch["target_mapping"]).logits
        g = model(ids, perm_mask=batch["perm_mask"], target_mapping=batch["target_mapping"]).logits
    assert (e - g).abs().max().item() <= 1e-4


@pytest.mark.parametrize("args,message", [
    (["--partial-k", "0"], "--partial-k must be at least 1"),
    (["--model", "gpt2"], "--model gpt2 is a gpt2; permutation language modelling trains XLNet"),
])
def test_bad_options(tmp_path, capsys, args, message):
    corpus = tmp_path / "t.txt"
    corpus.write_text("some text " * 200, encoding="utf-8")
    base = ["train", "permutation-lm", "--model", "xlnet-base-cased", "--tokenizer", "char", "--data", str(corpus),
            "--out", str(tmp_path / "out"), "--steps", "2"]
    assert main(base + args) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_permutation_task_refuses_another_family(tmp_path):
    from lmatlas.training.tasks import PermutationLMTask

    cfg = architecture_preset("bert-base", vocab_size=50, num_layers=1, num_heads=2, hidden_size=16).config
    with pytest.raises(lmatlas.LmatlasError, match="trains an XLNet"):
        PermutationLMTask(LmatlasModel(cfg, "masked-lm"), None, None, None, 8, 0)


def test_saved_model_folder_is_complete(tmp_path):
    """A from-scratch XLNet of the preset's design round-trips through its config.json."""
    from lmatlas.save import as_saved, save_model

    cfg = architecture_preset("xlnet-base-cased", vocab_size=60, num_layers=1, num_heads=2, hidden_size=16).config
    model = LmatlasModel(as_saved(cfg, "causal-lm"), "causal-lm")
    save_model(model, tmp_path)
    hf = json.loads(Path(tmp_path / "config.json").read_text())
    assert hf["architectures"] == ["XLNetLMHeadModel"] and hf["mem_len"] == 0 and hf["d_head"] == 8
    again = lmatlas.load(tmp_path)
    assert again.config.xlnet == model.config.xlnet
