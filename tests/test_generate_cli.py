"""`lmatlas generate` end to end on a tiny GPT-2 with the real GPT-2 tokenizer files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lmatlas
from lmatlas.cli import main
from lmatlas.tokenizer import load_tokenizer

from .test_generate_text import gpt2_folder  # noqa: F401  (the fixture)

PROMPT = "First Citizen:\nBefore we proceed"


def _run(capsys, *argv):
    code = main(["generate", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _expected(folder, prompt=PROMPT, **kw):
    model, tok = lmatlas.load(folder), load_tokenizer(folder)
    ids = torch.tensor([tok.encode(prompt)])
    out = model.generate(ids, **kw)
    return [tok.decode(row[ids.shape[1]:].tolist(), skip_special_tokens=True) for row in out]


def test_greedy_continuation(gpt2_folder, capsys):
    code, out, _ = _run(capsys, "--model", gpt2_folder, PROMPT, "--max-new-tokens", 12)
    assert code == 0
    assert out == _expected(gpt2_folder, max_new_tokens=12)[0] + "\n"


def test_stream_prints_the_same_text(gpt2_folder, capsys):
    code, out, _ = _run(capsys, "--model", gpt2_folder, PROMPT, "--max-new-tokens", 12, "--stream")
    assert code == 0
    assert out == _expected(gpt2_folder, max_new_tokens=12)[0] + "\n"


def test_seeded_sampling_is_repeatable(gpt2_folder, capsys):
    args = ("--model", gpt2_folder, PROMPT, "--max-new-tokens", 10, "--temperature", 0.9, "--top-k", 40,
            "--top-p", 0.95, "--seed", 3)
    _, a, _ = _run(capsys, *args)
    _, b, _ = _run(capsys, *args)
    assert a == b
    assert a == _expected(gpt2_folder, max_new_tokens=10, do_sample=True, temperature=0.9, top_k=40, top_p=0.95,
                          seed=3)[0] + "\n"


def test_beams_with_several_sequences(gpt2_folder, capsys):
    code, out, _ = _run(capsys, "--model", gpt2_folder, PROMPT, "--max-new-tokens", 6, "--num-beams", 3,
                        "--num-return-sequences", 2)
    assert code == 0
    texts = _expected(gpt2_folder, max_new_tokens=6, num_beams=3, num_return_sequences=2)
    assert out == f"--- 1\n{texts[0]}\n--- 2\n{texts[1]}\n"


def test_prompt_from_stdin(gpt2_folder, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(PROMPT))
    code, out, _ = _run(capsys, "--model", gpt2_folder, "-", "--max-new-tokens", 5)
    assert code == 0 and out == _expected(gpt2_folder, max_new_tokens=5)[0] + "\n"


def test_chat(gpt2_folder, tmp_path, capsys):
    folder = tmp_path / "chat"
    shutil.copytree(gpt2_folder, folder)
    template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    code, out, _ = _run(capsys, "--model", folder, "Hello there", "--chat", "--system", "Be kind.",
                        "--max-new-tokens", 7)
    assert code == 0
    rendered = "<|system|>Be kind.\n<|user|>Hello there\n<|assistant|>"
    assert out == _expected(folder, prompt=rendered, max_new_tokens=7)[0] + "\n"


@pytest.mark.parametrize(
    "argv,message",
    [
        (("--chat", "Hi"), "has no chat template"),
        (("Hi", "--top-p", "1.5"), "--top-p must be in (0, 1], not 1.5"),
        (("Hi", "--temperature", "0"), "temperature must be > 0 when sampling"),
        (("Hi", "--max-new-tokens", "500", "--no-sliding-window"), "goes beyond the model's 64 positions"),
        (("Hi", "--max-new-tokens", "-3"), "--max-new-tokens must be >= 0"),
        ((), "give a PROMPT"),
        (("Hi", "--stop", "x", "--num-beams", "0"), "--num-beams must be"),
    ],
)
def test_bad_input_is_one_line(gpt2_folder, capsys, argv, message):
    code, out, err = _run(capsys, "--model", gpt2_folder, *argv)
    assert code == 1 and out == ""
    assert err.startswith("lmatlas: error: ") and message in err and err.count("\n") == 1


def test_missing_model_folder(tmp_path, capsys):
    code, _, err = _run(capsys, "--model", tmp_path / "nothing-here", "Hi")
    assert code == 1 and "no such folder" in err
