"""Data parallel: two processes with half the batch each train like one with the whole batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

import lmatlas
from lmatlas.cli import main

from .paths import data_file

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _args(data: Path, out: Path, batch: int, objective: str = "gpt") -> list[str]:
    model = "gpt2" if objective == "gpt" else "bert-base"
    return ["train", objective, "--model", model, "--tokenizer", "char", "--data", str(data), "--out", str(out),
            "--layers", "2", "--heads", "2", "--dim", "32", "--block", "32", "--batch-size", str(batch),
            "--steps", "20", "--lr", "3e-3", "--warmup", "2", "--dropout", "0", "--eval-every", "10",
            "--eval-windows", "8", "--no-progress", "--seed", "5"]


def _train_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _torchrun(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmatlas", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _compare(single: Path, double: Path) -> None:
    a, b = _train_log(single), _train_log(double)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        assert x["split"] == y["split"]
        if x["split"] == "train":
            assert abs(x["loss"] - y["loss"]) < 1e-4, (x, y)
            assert x["tokens"] == y["tokens"]  # both processes' tokens are counted
        else:
            assert abs(x["loss"] - y["loss"]) < 1e-4, (x, y)
    ma, mb = lmatlas.load(single / "model").state_dict(), lmatlas.load(double / "model").state_dict()
    assert max(float((ma[k] - mb[k]).abs().max()) for k in ma) < 1e-4


def test_two_processes_with_half_the_batch_match_one_with_the_whole(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:20000], encoding="utf-8")
    single, double, sharded = tmp_path / "single", tmp_path / "double", tmp_path / "sharded"
    assert main(_args(data, single, 8)) == 0
    _torchrun(_args(data, double, 4))
    _compare(single, double)
    # Only the main process writes: one log line per step, one set of files.
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())
    # FSDP: the same training with parameters, gradients and optimizer state sharded.
    _torchrun(_args(data, sharded, 4) + ["--fsdp", "--grad-accum", "1"])
    _compare(single, sharded)


def _tasks(tmp_path):
    """Builders of each kind of task over the same data, for the sharding test."""
    from lmatlas.tokenizer import load_tokenizer
    from lmatlas.training import finetune, tasks
    from lmatlas.training.models import build_model
    from lmatlas.training.data import load_stream
    from lmatlas.training.tokenizer_trainer import train_tokenizer

    data = tmp_path / "text.txt"
    data.write_text(data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:5000], encoding="utf-8")
    tok_dir = train_tokenizer([data], "char", tmp_path / "tok", specials=["[PAD]", "[CLS]", "[SEP]", "[MASK]"])
    tok = load_tokenizer(tok_dir)
    stream = load_stream(tok, [data])
    size = dict(num_layers=1, num_heads=2, hidden_size=16)
    rows = [{"input_ids": tok(line)["input_ids"], "label": i % 2} for i, line in enumerate(data.read_text().splitlines()) if line]

    def causal():
        return tasks.CausalLMTask(build_model("gpt2", "causal-lm", tok, 16, size), tok_dir, stream, None, 16, 3)

    def masked():
        return tasks.MaskedLMTask(build_model("bert-base", "masked-lm", tok, 16, size), tok, tok_dir, stream,
                                  None, 16, 3, whole_word=True)

    def classify():
        model = build_model("bert-base", "sequence-classification", tok, 64, size)
        return finetune.ClassifyTask(model, tok, tok_dir, rows, None, 3)

    def denoising():
        from lmatlas.training.tokenizer_trainer import train_tokenizer as train

        bart_dir = train([data], "char", tmp_path / "bart-tok", specials=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        bart_tok = load_tokenizer(bart_dir)
        model = build_model("bart-base", "seq2seq-lm", bart_tok, 16, size)
        return tasks.DenoisingTask("denoising", model, bart_tok, bart_dir, load_stream(bart_tok, [data]), None, 16, 3)

    return {"causal": causal, "masked": masked, "classify": classify, "denoising": denoising}


def test_each_process_takes_its_slice_of_the_global_batch(tmp_path):
    from lmatlas.training.distributed import Context

    for name, make in _tasks(tmp_path).items():
        whole, rank0, rank1 = make(), make(), make()
        for _ in range(3):  # the samplers stay in step across batches
            a = whole.next_batch(8, Context())
            b0 = rank0.next_batch(4, Context(rank=0, world=2))
            b1 = rank1.next_batch(4, Context(rank=1, world=2))
            if name == "classify":  # each slice is padded to its own longest row
                def rows(b):
                    return [r[m.bool()].tolist() for r, m in zip(b["input_ids"], b["attention_mask"])]

                assert rows(a) == rows(b0) + rows(b1)
                assert a["labels"].tolist() == b0["labels"].tolist() + b1["labels"].tolist()
            else:
                for key in ("input_ids", "labels", "decoder_input_ids", "attention_mask"):
                    if key not in a:
                        continue
                    assert torch.equal(a[key], torch.cat([b0[key], b1[key]])), (name, key)


def test_a_data_parallel_run_resumes_with_the_same_losses(tmp_path):
    """Two processes, checkpoint at step 10, everything after it lost (as a kill would leave the
    folder); resumed under torchrun, steps 11-20 log the losses of the uninterrupted run."""
    data = tmp_path / "text.txt"
    data.write_text(data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:20000], encoding="utf-8")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = ["--save-every", "10", "--keep", "100"]
    _torchrun(_args(data, whole, 4) + args)
    _torchrun(_args(data, cut, 4) + args)
    for name in ("checkpoint-000020", "model"):
        shutil.rmtree(cut / name)
    log = cut / "log.jsonl"
    kept = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= 10]
    log.write_text("\n".join(kept) + "\n")
    _torchrun(_args(data, cut, 4) + args + ["--resume"])
    a, b = _train_log(whole), _train_log(cut)
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # exactly: same processes, same order
