"""`lmatlas train` end to end: checkpoints, exact resume after SIGKILL, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lmatlas
from lmatlas.cli import main

from .paths import data_file
from .reference import transformers

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--model", "gpt2", "--layers", "2", "--heads", "2", "--dim", "32", "--block", "16", "--batch-size", "4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    text = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:20000]
    path = tmp_path_factory.mktemp("data") / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _train_args(corpus: Path, out: Path, steps: int, extra=()) -> list[str]:
    return ["train", "gpt", *TINY, "--tokenizer", "char", "--data", str(corpus), "--out", str(out),
            "--steps", str(steps), "--save-every", "10", "--keep", "100", "--dropout", "0.1", "--warmup", "5",
            "--eval-every", "50", "--eval-windows", "20", "--no-progress", "--seed", "7", *extra]


def _losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    steps = [r["step"] for r in train]
    assert steps == sorted(set(steps)), "each step is logged once"
    return {r["step"]: r["loss"] for r in train}


def _run(args: list[str]) -> None:
    # Every run in a process of its own with the same thread count: bitwise equal losses need
    # the same reduction order, which the number of threads can change.
    p = subprocess.run([sys.executable, "-m", "lmatlas", *args], env=_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_a_run_killed_after_a_checkpoint_resumes_with_the_same_losses(corpus, tmp_path):
    steps = 150
    whole = tmp_path / "whole"
    _run(_train_args(corpus, whole, steps))

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lmatlas", *_train_args(corpus, killed, steps)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (killed / "checkpoint-000010").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted = _losses(killed)
    assert max(interrupted) < steps, "the run finished before it could be killed"

    _run(_train_args(corpus, killed, steps, ["--resume"]))
    resumed, reference = _losses(killed), _losses(whole)
    assert sorted(resumed) == list(range(1, steps + 1))
    assert resumed == reference  # exactly: float32, same seed, dropout on
    a = lmatlas.load(whole / "model").state_dict()
    b = lmatlas.load(killed / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_are_hugging_face_folders(corpus, tmp_path):
    tf = transformers()
    out = tmp_path / "run"
    assert main(_train_args(corpus, out, 20)) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["checkpoint-000010", "checkpoint-000020", "log.jsonl", "loss.png", "model", "tokenizer"]
    ckpt = out / "checkpoint-000020"
    assert {"config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt"} <= {p.name for p in ckpt.iterdir()}
    ref = tf.AutoModelForCausalLM.from_pretrained(ckpt).eval()
    tok = tf.AutoTokenizer.from_pretrained(ckpt)
    ours = lmatlas.load(ckpt)
    ids = torch.tensor([tok("ROMEO: hark")["input_ids"]])
    torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-5)
    assert lmatlas.load_tokenizer(ckpt)("ROMEO: hark")["input_ids"] == ids[0].tolist()


def test_data_smaller_than_one_block(tmp_path, capsys):
    data = tmp_path / "tiny.txt"
    data.write_text("to be or not", encoding="utf-8")
    code = main(["train", "gpt", *TINY, "--tokenizer", "char", "--data", str(data), "--out", str(tmp_path / "o"),
                 "--val-fraction", "0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "tiny.txt" in err and "fewer than one block of 17" in err


def test_tokenizer_larger_than_the_model_vocabulary(corpus, tmp_path, capsys):
    out = tmp_path / "char"
    assert main(_train_args(corpus, out, 2)) == 0
    wide = tmp_path / "wide"
    assert main(["tokenizer", "train", "--data", str(corpus), "--kind", "byte-bpe", "--vocab-size", "300",
                 "--out", str(wide)]) == 0
    capsys.readouterr()
    code = main(["train", "gpt", "--model", str(out / "model"), "--tokenizer", str(wide), "--data", str(corpus),
                 "--out", str(tmp_path / "o"), "--block", "16", "--steps", "1"])
    assert code == 1
    err = capsys.readouterr().err
    chars = len(set(corpus.read_text(encoding="utf-8")))
    assert "300 tokens" in err and f"vocabulary of {chars}" in err


def test_resuming_from_another_models_checkpoint(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(corpus, out, 10)) == 0
    capsys.readouterr()
    args = _train_args(corpus, out, 20, ["--resume"])
    args[args.index("--dim") + 1] = "48"
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "checkpoint-000010" in err and "another model" in err and "32 there, 48 here" in err


def test_resuming_from_a_trainer_state_of_another_format(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(corpus, out, 10)) == 0
    capsys.readouterr()
    state_file = out / "checkpoint-000010" / "trainer_state.pt"
    state = torch.load(state_file, weights_only=True)
    assert state["format"] == 1 and "schedule" not in state and "config" not in state
    torch.save(dict(state, format=99), state_file)
    assert main(_train_args(corpus, out, 20, ["--resume"])) == 1
    err = capsys.readouterr().err
    assert "trainer_state.pt: a trainer state of format 99, not 1" in err and "Traceback" not in err


def test_a_fresh_run_does_not_mix_with_an_old_ones_checkpoints(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(corpus, out, 10)) == 0
    capsys.readouterr()
    assert main(_train_args(corpus, out, 10)) == 1
    assert "already holds the checkpoints of a run" in capsys.readouterr().err
    assert main(_train_args(corpus, out, 10, ["--resume"])) == 1
    assert "already at --steps 10" in capsys.readouterr().err


def test_resume_without_a_checkpoint(corpus, tmp_path, capsys):
    assert main(_train_args(corpus, tmp_path / "none", 5, ["--resume"])) == 1
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_unknown_objective_and_encoder_decoder_objectives(corpus, tmp_path, capsys):
    assert main(["train", "unlikelihood", "--model", "gpt2", "--data", str(corpus), "--out", str(tmp_path)]) == 1
    assert "unknown objective 'unlikelihood'" in capsys.readouterr().err
    assert main(["train", "t5", "--model", "gpt2", "--tokenizer", "char", "--data", str(corpus),
                 "--out", str(tmp_path / "t5"), "--layers", "1", "--dim", "16", "--heads", "2"]) == 1
    assert "gpt2 is not an encoder-decoder (T5, BART)" in capsys.readouterr().err
    assert main(["train", "bert", "--model", "t5-small", "--tokenizer", "char", "--data", str(corpus),
                 "--out", str(tmp_path / "bert"), "--layers", "1", "--dim", "16", "--heads", "2"]) == 1
    assert "t5-small is an encoder-decoder" in capsys.readouterr().err


def test_objective_needs_the_right_skeleton(corpus, tmp_path, capsys):
    code = main(["train", "gpt", "--model", "bert-base", "--tokenizer", "char", "--data", str(corpus),
                 "--out", str(tmp_path / "o"), "--layers", "1", "--dim", "16", "--heads", "2"])
    assert code == 1
    assert "not a decoder" in capsys.readouterr().err


def test_gradient_accumulation_matches_the_whole_batch_and_bf16_runs(corpus, tmp_path):
    base = ["train", "gpt", *TINY[:-2], "--tokenizer", "char", "--data", str(corpus), "--steps", "8",
            "--dropout", "0", "--no-progress", "--seed", "2", "--eval-windows", "4"]
    assert main(base + ["--out", str(tmp_path / "whole"), "--batch-size", "8"]) == 0
    assert main(base + ["--out", str(tmp_path / "accum"), "--batch-size", "4", "--grad-accum", "2"]) == 0
    a, b = _losses(tmp_path / "whole"), _losses(tmp_path / "accum")
    assert max(abs(a[k] - b[k]) for k in a) < 1e-4
    assert main(base + ["--out", str(tmp_path / "bf16"), "--batch-size", "8", "--bf16"]) == 0
    c = _losses(tmp_path / "bf16")
    assert max(abs(a[k] - c[k]) for k in a) < 0.1  # the same training, at bfloat16 precision
