"""The command line as a newcomer meets it: every mistake is one line on standard error that
names the flag or the file, exit status 1 (2 for a malformed command line), no traceback, and
nothing half-written left behind."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from lmatlas import cli
from lmatlas.cli import main

from .paths import data_file
from .reference import transformers

TINY_GPT = ["--model", "gpt2", "--layers", "1", "--heads", "2", "--dim", "16", "--block", "48"]
QUIET = ["--no-progress", "--seed", "1"]


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error(err: str, *needles: str) -> None:
    """One line, the error's, naming each of ``needles``."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmatlas: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "shakespeare.txt"
    path.write_text(data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def char_gpt(corpus, tmp_path_factory) -> Path:
    """A baby GPT trained for a few steps with the command: its model folder."""
    out = tmp_path_factory.mktemp("char-gpt")
    assert main(["train", "gpt", *TINY_GPT, "--tokenizer", "char", "--data", str(corpus), "--out", str(out),
                 "--steps", "3", *QUIET]) == 0
    return out / "model"


# -- tracebacks ---------------------------------------------------------------------------------


def test_search_build_skips_empty_files_with_a_notice(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "empty.md").write_text("", encoding="utf-8")
    (notes / "blank.txt").write_text("  \n\t\n", encoding="utf-8")
    (notes / "fruit.txt").write_text("Bananas are yellow fruit rich in potassium.\n", encoding="utf-8")
    code, out, err = run(capsys, "search", "build", tmp_path / "idx", "--from", notes)
    assert code == 0 and "indexed 1 passages" in out
    notices = err.strip().splitlines()
    assert len(notices) == 2 and all(n.startswith("skipped ") and "no text to index" in n for n in notices)
    assert "blank.txt" in notices[0] and "empty.md" in notices[1]
    # Only empty files: nothing to build, and no index folder made.
    code, _, err = run(capsys, "search", "build", tmp_path / "idx2", "--from", notes / "empty.md")
    assert code == 1 and not (tmp_path / "idx2").exists()
    assert "hold no text to index" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("command", ["tokenizer", "train", "search", "embed", "topics", "run"])
def test_an_output_of_the_wrong_kind_is_refused_before_any_work(command, corpus, tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("mine\n", encoding="utf-8")
    a_folder = tmp_path / "out.npy"
    a_folder.mkdir()
    args, named = {
        "tokenizer": (["tokenizer", "train", "--data", corpus, "--kind", "char", "--out", a_file], "--out"),
        "train": (["train", "gpt", *TINY_GPT, "--tokenizer", "char", "--data", corpus, "--out", a_file, "--steps",
                   "1", *QUIET], "--out"),
        "search": (["search", "build", a_file, "--from", corpus], str(a_file)),
        "embed": (["embed", "-i", corpus, "-o", a_folder], "--output"),
        "topics": (["topics", "-i", corpus, "-o", a_folder], "--output"),
        "run": (["run", "feature-extraction", "-i", corpus, "-o", a_folder], "--output"),
    }[command]
    code, _, err = run(capsys, *args)
    assert code == 1
    one_error(err, named, "folder")
    assert a_file.read_text(encoding="utf-8") == "mine\n"
    assert listing(a_folder) == [] and listing(tmp_path) == ["out.npy", "taken"]


def test_a_file_below_a_file_is_named(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("x\n", encoding="utf-8")
    code, _, err = run(capsys, "embed", "-i", tmp_path / "a.txt", "-o", tmp_path / "a.txt" / "v.npy")
    assert code == 1
    one_error(err, "--output", "a.txt is a file, not a folder")


# -- bad input accepted silently -----------------------------------------------------------------


@pytest.mark.parametrize("flag,value,least", [("--keywords", "-1", 1), ("--keywords", "0", 1),
                                              ("--representative", "-2", 0)])
def test_topics_counts_must_make_sense(flag, value, least, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("".join(f"text number {i}\n" for i in range(30)), encoding="utf-8")
    code, _, err = run(capsys, "topics", "-i", texts, flag, value, "--min-topic-size", "5", "-o", tmp_path / "t.json")
    assert code == 1
    one_error(err, f"{flag} must be an integer of at least {least}, not {value}")
    assert not (tmp_path / "t.json").exists()


def test_finetune_ner_refuses_a_table(tmp_path, capsys):
    code, _, err = run(capsys, "finetune", "ner", "--train", data_file("sst2", "train.tsv"), "--out", tmp_path / "run",
                       "--steps", "1", *QUIET)
    assert code == 1
    one_error(err, "train.tsv, line 2", "not a CoNLL file")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def chat_gpt(char_gpt, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("chat-gpt") / "model"
    shutil.copytree(char_gpt, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


CHATS = "".join(json.dumps({"messages": [{"role": "user", "content": text}]}) + "\n" for text in ("Hi", "Why so?"))


def test_chats_piped_into_text_generation_are_read_as_chats(chat_gpt, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(CHATS.encode())))
    code, out, err = run(capsys, "run", "text-generation", "-m", chat_gpt, "--max-new-tokens", "3", "--no-do-sample")
    assert code == 0, err
    assert err.strip() == ('lmatlas: warning: standard input holds JSON lines with "messages": read as chats '
                           "(--format jsonl); --format txt takes each line as plain text")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["input"]["messages"][0]["content"] for r in rows] == ["Hi", "Why so?"]
    assert rows[0]["output"][0]["generated_text"][-1]["role"] == "assistant"


def test_chats_without_a_template_fail_once(char_gpt, tmp_path, capsys):
    chats = tmp_path / "chats.jsonl"
    chats.write_text(CHATS * 3, encoding="utf-8")
    code, out, err = run(capsys, "run", "text-generation", "-m", char_gpt, "-i", chats, "--max-new-tokens", "2")
    assert code == 1 and out == ""
    one_error(err, "chat template")


def test_byte_bpe_for_a_masked_lm_gets_the_models_mask_token(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "bert", "--model", "roberta-base", "--layers", "1", "--heads", "2", "--dim",
                       "16", "--block", "16", "--tokenizer", "byte-bpe", "--vocab-size", "300", "--data", corpus,
                       "--out", out, "--steps", "2", *QUIET)
    assert code == 0, err
    config = json.loads((out / "model" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["mask_token"] == "<mask>" and config["pad_token"] == "<pad>"


@pytest.mark.parametrize("args,message", [
    (["--model", "./nonexistent", "--tokenizer", "char"], "./nonexistent: no such folder"),
    (["--model", "gpt", "--ffn", "100", "--layers", "1", "--heads", "1", "--dim", "16", "--tokenizer", "char"],
     "cannot express --ffn 100"),
    (["--model", "gpt2", "--dim", "100", "--tokenizer", "char"], "--dim 100 is not a multiple of --heads 12"),
    (["--model", "gpt2", "--layers", "4", "--heads", "4", "--dim", "128"], "--tokenizer is needed"),  # README's, once
    (["--model", "gpt2", "--tokenizer", "./no-tokenizer"], "--tokenizer ./no-tokenizer: no such folder"),
    (["--model", "gpt2", "--tokenizer", "char", "--data", "missing.txt"], "--data missing.txt: no such file"),
])
def test_train_checks_everything_before_writing(args, message, corpus, tmp_path, capsys):
    data = [] if "--data" in args else ["--data", str(corpus)]
    code, _, err = run(capsys, "train", "causal-lm", *args, *data, "--out", tmp_path / "run", "--steps", "2", *QUIET)
    assert code == 1
    one_error(err, message)
    assert not (tmp_path / "run").exists()


def test_an_interrupted_run_says_what_it_kept(corpus, tmp_path, monkeypatch, capsys):
    import lmatlas.training

    def interrupted(recipe, config):
        raise KeyboardInterrupt

    monkeypatch.setattr(lmatlas.training, "train", interrupted)
    code, _, err = run(capsys, "finetune", "classify", "--train", data_file("sst2", "dev.tsv"), "--out", tmp_path / "r",
                       *QUIET)
    assert code == 130
    assert err.strip() == ("lmatlas: interrupted; no checkpoint was written (--save-every N writes one every N steps, "
                           "which --resume continues from)")


# -- messages that name flags, and models of the wrong kind --------------------------------------


@pytest.mark.parametrize("args,message", [
    (["run", "zero-shot-classification", "A film."], "needs --candidate-labels"),
    (["run", "fill-mask", "x [MASK]"], "name one with --model"),
    (["embed", "-i", "-", "-o", "v.npy", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["topics", "-i", "-", "--min-topic-size", "50"], "a smaller --min-topic-size"),
])
def test_errors_name_flags(args, message, monkeypatch, tmp_path, capsys):
    import io

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"a text\nanother text\n")))
    code, out, err = run(capsys, *args)
    assert code == 1
    if out:  # a per-input error of `run`: in its JSON line too
        assert message in json.loads(out)["error"]
        assert message in err and "Traceback" not in err
    else:
        one_error(err, message)


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> Path:
    tf = transformers()
    folder = tmp_path_factory.mktemp("t5")
    config = tf.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    tf.T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


def test_models_of_the_wrong_kind_are_named(corpus, t5_folder, tmp_path, capsys):
    out = tmp_path / "bert"
    assert main(["train", "bert", "--model", "bert-base", "--layers", "1", "--heads", "2", "--dim", "16", "--block",
                 "16", "--tokenizer", "char", "--data", str(corpus), "--out", str(out), "--steps", "1", *QUIET]) == 0
    capsys.readouterr()
    code, _, err = run(capsys, "generate", "-m", out / "model", "Hello")
    assert code == 1
    one_error(err, "bert is an encoder", "cannot write it", "give a decoder")
    code, _, err = run(capsys, "chat", "-m", t5_folder)
    assert code == 1
    one_error(err, "chat needs a decoder")
    code, _, err = run(capsys, "similarity", "a", "b", "-m", t5_folder)
    assert code == 1
    one_error(err, "t5 is an encoder-decoder", "sentence embeddings")


# -- paths that are not regular files ------------------------------------------------------------


def test_a_named_pipe_is_read(tmp_path, capsys):
    fifo = tmp_path / "lines"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "w", encoding="utf-8") as f:
            f.write("first line\nsecond line\n")

    writer = threading.Thread(target=write)
    writer.start()
    code, out, err = run(capsys, "embed", "--input", fifo, "--output", tmp_path / "v.npy", "--no-progress")
    writer.join()
    assert code == 0, err
    assert "2 embeddings" in out


def test_training_data_from_a_named_pipe(corpus, tmp_path, capsys):
    """Training reads its data twice (the tokenizer, then the stream): a pipe is read once."""
    fifo = tmp_path / "data"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(corpus.read_bytes()))
    writer.start()
    code, out, err = run(capsys, "train", "gpt", *TINY_GPT, "--tokenizer", "char", "--data", fifo, "--out",
                         tmp_path / "run", "--steps", "2", *QUIET)
    writer.join()
    assert code == 0, err
    assert json.loads(out)["steps"] == 2


def test_process_substitution_is_read(tmp_path):
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    # The descriptor bash's <(cat x) gives: /dev/fd/N, a pipe.
    read, write = os.pipe()
    os.write(write, b"one\ntwo\nthree\n")
    os.close(write)
    p = subprocess.run([sys.executable, "-m", "lmatlas", "embed", "--input", f"/dev/fd/{read}", "--output",
                        str(tmp_path / "v.npy")], pass_fds=(read,), capture_output=True, text=True, env=env)
    os.close(read)
    assert p.returncode == 0, p.stderr
    assert "3 embeddings" in p.stdout and p.stderr == ""


def test_a_folder_as_input_is_named_a_folder(tmp_path, capsys):
    code, _, err = run(capsys, "embed", "--input", tmp_path, "--output", tmp_path / "v.npy")
    assert code == 1
    one_error(err, f"--input {tmp_path}: is a folder")
    code, _, err = run(capsys, "run", "feature-extraction", "--input", tmp_path)
    assert code == 1
    one_error(err, "is a folder")


# -- small things --------------------------------------------------------------------------------


def test_a_warning_says_lmatlas_once(capsys):
    cli._show_warning(UserWarning("lmatlas: the C decoding kernels are unavailable"), UserWarning, "x.py", 1)
    assert capsys.readouterr().err == "lmatlas: warning: the C decoding kernels are unavailable\n"


def test_run_without_a_task(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "lmatlas: error: the following argument is required: TASK"


def test_system_without_chat(char_gpt, capsys):
    code, _, err = run(capsys, "generate", "-m", char_gpt, "ROMEO:", "--system", "Be brief.")
    assert code == 1
    one_error(err, "--system", "add --chat")


def test_no_truncate_names_the_line(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("short\nalso short\n" + "word " * 400 + "\n", encoding="utf-8")
    code, _, err = run(capsys, "embed", "-i", src, "-o", tmp_path / "v.npy", "--no-truncate")
    assert code == 1
    one_error(err, f"{src} line 3: 402 tokens, more than the model's 256")
    assert listing(tmp_path) == ["in.txt"]


def test_embed_drops_a_byte_order_mark(tmp_path, capsys):
    src = tmp_path / "bom.txt"
    src.write_bytes(b"\xef\xbb\xbfhello\nworld\n")
    assert main(["embed", "-i", str(src), "-o", str(tmp_path / "v.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == ["hello", "world"]


def test_search_build_refuses_a_folder_that_is_not_an_index(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.md").write_text("# My thesis\n\nAll my work.\n", encoding="utf-8")
    code, _, err = run(capsys, "search", "build", mine, "--from", mine)
    assert code == 1
    one_error(err, str(mine), "not a search index")
    assert listing(mine) == ["thesis.md"]
    # An empty folder is fine, and becomes an index (marked) that builds again.
    (tmp_path / "idx").mkdir()
    assert run(capsys, "search", "build", tmp_path / "idx", "--from", mine)[0] == 0
    assert (tmp_path / "idx" / "lmatlas-index").exists()
    assert run(capsys, "search", "build", tmp_path / "idx", "--from", mine)[0] == 0


def test_version(capsys):
    import lmatlas

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"lmatlas {lmatlas.__version__}\n"

