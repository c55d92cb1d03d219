"""The command line: each command end to end, and user errors as one line with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lmatlas.cli import main


def run(*args, stdin: str | None = None):
    """The real command in a subprocess: exit status, stdout, stderr."""
    p = subprocess.run([sys.executable, "-m", "lmatlas", *map(str, args)], input=stdin, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def test_help_lists_commands():
    code, out, _ = run("--help")
    assert code == 0 and "embed" in out and "search" in out


def test_embed_npy_and_jsonl(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("first sentence\nsecond one, a little longer\n", encoding="utf-8")
    assert main(["embed", "--input", str(src), "--output", str(tmp_path / "v.npy")]) == 0
    v = np.load(tmp_path / "v.npy")
    assert v.shape == (2, 384) and v.dtype == np.float32
    assert main(["embed", "--input", str(src), "--output", str(tmp_path / "v.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["first sentence", "second one, a little longer"]
    assert np.allclose(np.array([r["embedding"] for r in rows]), v, atol=1e-6)


def test_embed_from_stdin(tmp_path):
    code, out, err = run("embed", "--input", "-", "--output", tmp_path / "v.npy", stdin="one\ntwo\nthree\n")
    assert code == 0, err
    assert np.load(tmp_path / "v.npy").shape == (3, 384)


def test_similarity(capsys):
    assert main(["similarity", "A man plays guitar.", "Someone is playing a guitar."]) == 0
    score = float(capsys.readouterr().out)
    assert 0.5 < score <= 1.0


def test_search_build_and_query(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Loading\n\nUse lmatlas.load to read a checkpoint folder.\n", encoding="utf-8")
    (docs / "b.txt").write_text("Bananas are yellow fruit rich in potassium.\n", encoding="utf-8")
    code, out, err = run("search", "build", tmp_path / "idx", "--from", docs)
    assert code == 0, err
    assert "2 file(s) embedded" in out
    code, out, err = run("search", "query", tmp_path / "idx", "how to read a checkpoint", "-k", "1")
    assert code == 0, err
    assert "a.md:1" in out and out.startswith("1. ")
    code, out, _ = run("search", "build", tmp_path / "idx", "--from", docs)
    assert "0 file(s) embedded, 2 unchanged" in out


@pytest.mark.parametrize(
    "args,stdin,message",
    [
        (["embed", "--input", "missing.txt", "--output", "v.npy"], None, "missing.txt: no such file"),
        (["embed", "--input", "-", "--output", "v.npy"], "", "standard input: no text"),
        (["embed", "--input", "-", "--output", "v.csv"], "x\n", "must end in .npy or .jsonl"),
        (["embed", "--input", "-", "--output", "v.npy", "--model", "./no/such/model"], "x\n", "no such folder"),
        (["embed", "--input", "-", "--output", "v.npy", "--no-truncate"], "word " * 400, "more than the model's 256"),
        (["similarity", "", "text"], None, "the first text is empty"),
        (["search", "query", "no-index", "question"], None, "no search index here"),
    ],
)
def test_user_errors(args, stdin, message, tmp_path):
    code, out, err = run(*args, stdin=stdin) if stdin is not None else run(*args)
    assert code == 1, (out, err)
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_non_utf8_input(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    code, _, err = run("embed", "--input", bad, "--output", tmp_path / "v.npy")
    assert code == 1 and "not UTF-8 text" in err and "Traceback" not in err


def test_bad_arguments_exit_2():
    code, _, err = run("embed", "--output", "v.npy")
    assert code == 2 and "--input" in err
    code, _, err = run("frobnicate")
    assert code == 2


def test_truncation_notice_is_one_line(tmp_path):
    code, _, err = run("embed", "--input", "-", "--output", tmp_path / "v.npy", stdin="word " * 400)
    assert code == 0
    assert err.strip() == "lmatlas: warning: 1 text(s) longer than 256 tokens were truncated"
