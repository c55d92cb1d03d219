"""Transformer-XL's training objective (`lmatlas train segment-lm`): consecutive segments per
batch row, the memory carried from step to step, and a tiny model that learns Shakespeare."""

from __future__ import annotations

import json

import pytest
import torch

import lmatlas
from lmatlas.cli import main
from lmatlas.outputs import ModelOutput
from lmatlas.training.data import TokenStream
from lmatlas.training.distributed import Context
from lmatlas.training.tasks import SegmentLMTask

from .test_train_learning import corpus  # noqa: F401  (the first 40,000 characters of Shakespeare)

pytestmark = pytest.mark.usefixtures("one_thread")


def stream(n: int) -> TokenStream:
    return TokenStream(torch.arange(n), torch.ones(n, dtype=torch.bool))


class Recorder(torch.nn.Module):
    """A stand-in model: records the memory each call receives and returns a new one."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.received: list = []

    def forward(self, input_ids, mems=None):
        self.received.append(mems)
        logits = torch.zeros(*input_ids.shape, 100) + self.weight
        return ModelOutput(logits=logits, mems=[torch.full((2, input_ids.shape[0], 1), float(len(self.received)))])


def test_rows_read_consecutive_segments_and_carry_the_memory():
    """Each row reads its own stretch of the stream, segment after segment (the accumulation
    steps of one update included); each segment gets the memory the previous one left, and when
    the stretches run out every row starts over, with no memory."""
    task = SegmentLMTask(Recorder(), None, stream(100), None, block=4)
    model, ctx = task.module, Context()
    batches = [task.next_batch(3, ctx) for _ in range(9)]  # stretches of 33 tokens: 8 segments of 4 (+1)
    starts = [b["input_ids"][:, 0].tolist() for b in batches]
    assert starts[:3] == [[0, 33, 66], [4, 37, 70], [8, 41, 74]] and starts[8] == [0, 33, 66]
    for a, b in zip(batches[:7], batches[1:8]):
        assert torch.equal(b["input_ids"][:, 0], a["input_ids"][:, -1] + 1)  # the next segment, row by row
        assert torch.equal(a["labels"][:, -1], b["input_ids"][:, 0])  # the last label is its first token
    assert [b["fresh"] for b in batches] == [True] + [False] * 7 + [True]
    for b in batches:
        task.loss_terms(model, b)
    received = model.received
    assert received[0] is None and received[8] is None
    assert all(float(received[i][0][0, 0, 0]) == i for i in range(1, 8))  # the previous call's memory


def test_the_memory_is_detached_and_resumed(tmp_path):
    """With a Transformer-XL: gradients stay within a segment; a checkpoint's data state keeps
    the position and the memory, so a resumed run continues the same segments."""
    from lmatlas.catalog import architecture_preset
    from lmatlas.model import LmatlasModel

    cfg = architecture_preset("transfo-xl-wt103", vocab_size=100, hidden_size=16, num_heads=2, num_layers=2,
                              memory_length=4, same_length=False).config
    model = LmatlasModel(cfg, "causal-lm").train()
    task = SegmentLMTask(model, None, stream(100), None, block=4)
    ctx = Context()
    loss = task.loss_terms(model, task.next_batch(2, ctx))["loss"]
    loss.backward()
    assert all(not m.requires_grad for m in task.mems) and task.mems[0].shape == (4, 2, 16)
    state = task.state_dict()
    again = SegmentLMTask(model, None, stream(100), None, block=4)
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(again.mems, task.mems))
    assert torch.equal(again.next_batch(2, ctx)["input_ids"], task.next_batch(2, ctx)["input_ids"])


SMALL = ["--layers", "2", "--heads", "2", "--dim", "32", "--block", "32", "--batch-size", "8", "--lr", "2e-3",
         "--warmup", "10", "--dropout", "0", "--no-progress", "--eval-windows", "16", "--seed", "3"]


def test_a_tiny_model_learns_shakespeare_with_memory(corpus, tmp_path):
    out = tmp_path / "txl"
    assert main(["train", "transformer-xl", "--model", "transfo-xl-wt103", "--tokenizer", "char", "--data",
                 str(corpus), "--out", str(out), "--steps", "300", *SMALL]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in records if r["split"] == "train"]
    first, last = sum(train[:10]) / 10, sum(train[-10:]) / 10
    assert last < 0.75 * first and last < 3.0, (first, last)  # characters: ~4.1 nats at the start
    assert [r for r in records if r["split"] == "dev"][-1]["loss"] < 3.0
    model = lmatlas.load(out / "model")
    cfg = model.config
    assert (cfg.model_type, cfg.memory_length, cfg.same_length, cfg.num_layers) == ("transfo-xl", 32, False, 2)
    assert model.head_name == "causal-lm"


@pytest.mark.parametrize("args,message", [
    (["--model", "gpt2"], "segment-lm trains a model with a memory .* gpt2 has none"),
    (["--model", "transfo-xl-wt103", "--memory", "-1"], "--memory must be 0 or more tokens, not -1"),
    (["--model", "transfo-xl-wt103", "--batch-size", "4000"],
     "too few for 4000 rows of segments of --block 32 .* a smaller --block or --batch-size"),
])  # fmt: skip
def test_bad_options(args, message, corpus, tmp_path, capsys):
    code = main(["train", "segment-lm", "--tokenizer", "char", "--data", str(corpus), "--out", str(tmp_path / "o"),
                 "--steps", "2", "--layers", "1", "--heads", "2", "--dim", "16", "--block", "32", "--no-progress",
                 *args])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(message, err), err


def test_bfloat16_training_and_decoding():
    """Under bfloat16 autocast (``--bf16``) a segment's loss and gradients come through, and a
    bfloat16 model decodes."""
    from lmatlas.catalog import architecture_preset
    from lmatlas.model import LmatlasModel

    cfg = architecture_preset("transfo-xl-wt103", vocab_size=100, hidden_size=16, num_heads=2, num_layers=2,
                              memory_length=4, adaptive_cutoffs=[20, 50], adaptive_div=2).config
    assert cfg.tie_projections == [False, True, True]  # the preset's pattern, one per cluster
    model = LmatlasModel(cfg, "causal-lm").train()
    x = torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = model(x)
        loss = model(x, mems=first.mems, labels=x).loss
    loss.backward()
    assert torch.isfinite(loss) and model.backbone.layers[0].attn.qkv.weight.grad is not None
    model = model.eval().to(torch.bfloat16)
    assert model.generate(x, max_new_tokens=3).shape == (2, 8)
