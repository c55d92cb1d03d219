"""`lmatlas chat` and the Conversation under it, on a tiny GPT-2 (64 positions) with the real GPT-2
tokenizer files and a small chat template: the replies are generate()'s greedy continuations of
the rendered conversation; the commands, Ctrl-C and a conversation that outgrows the context."""

from __future__ import annotations

import io
import json
import shutil

import pytest

import lmatlas
from lmatlas.cli import main
from lmatlas.conversation import Conversation

from .test_generate_cli import _expected
from .test_generate_text import gpt2_folder  # noqa: F401  (the fixture)

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def chat_folder(gpt2_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(gpt2_folder, folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    return folder


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _typing(monkeypatch, lines):
    """Standard input as a terminal where the user types ``lines``, then Ctrl-D."""
    monkeypatch.setattr("sys.stdin", _Terminal())
    feed = iter(lines)

    def fake_input(prompt=""):
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)


def test_a_piped_message_is_answered_once(chat_folder, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there"))
    assert main(["chat", "--model", str(chat_folder), "--system", "Be kind.", "--max-new-tokens", "7"]) == 0
    rendered = "<|system|>Be kind.\n<|user|>Hello there\n<|assistant|>"
    assert capsys.readouterr().out == _expected(chat_folder, prompt=rendered, max_new_tokens=7)[0] + "\n"


def test_commands_at_a_terminal(chat_folder, tmp_path, capsys, monkeypatch):
    saved, emptied = tmp_path / "chat.json", tmp_path / "reset.json"
    _typing(monkeypatch, ["Hello there", "/system Be brief.", f"/save {saved}", "/bogus", "", "/reset",
                          f"/save {emptied}", "How are you?"])
    assert main(["chat", "--model", str(chat_folder), "--system", "Be kind.", "--max-new-tokens", "5"]) == 0
    out, err = capsys.readouterr()
    first = _expected(chat_folder, prompt="<|system|>Be kind.\n<|user|>Hello there\n<|assistant|>",
                      max_new_tokens=5)[0]
    messages = json.loads(saved.read_text(encoding="utf-8"))
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"},
                        {"role": "assistant", "content": first.strip()}]
    assert json.loads(emptied.read_text(encoding="utf-8")) == [{"role": "system", "content": "Be brief."}]
    second = _expected(chat_folder, prompt="<|system|>Be brief.\n<|user|>How are you?\n<|assistant|>",
                       max_new_tokens=5)[0]
    assert out.startswith(first + "\n(system message set)\n(saved 3 messages")
    assert out.endswith("(the conversation is forgotten)\n(saved 1 messages to " + str(emptied) + ")\n" + second + "\n\n")
    assert "lmatlas: error: /bogus is not a command" in err and "Traceback" not in err


def test_ctrl_c_stops_a_reply_and_keeps_the_chat(chat_folder, tmp_path, capsys, monkeypatch):
    def interrupted(model, tokenizer, prompt, **options):
        yield "Well"
        raise KeyboardInterrupt

    monkeypatch.setattr(lmatlas.generation, "stream", interrupted)
    saved = tmp_path / "chat.json"
    _typing(monkeypatch, ["Hello", f"/save {saved}"])
    assert main(["chat", "--model", str(chat_folder)]) == 0
    assert capsys.readouterr().out.startswith("Well [stopped]\n")
    assert json.loads(saved.read_text(encoding="utf-8"))[-1] == {"role": "assistant", "content": "Well"}


def test_the_oldest_exchanges_go_when_the_context_is_full(chat_folder):
    model, tokenizer = lmatlas.load(chat_folder), lmatlas.load_tokenizer(chat_folder)
    dropped = []
    chat = Conversation(model, tokenizer, "Be kind.", {"max_new_tokens": 20}, on_drop=dropped.append)
    for text in ("one two three four five", "six seven eight nine ten", "eleven twelve thirteen fourteen"):
        reply = "".join(chat.reply(text))
        assert chat.turns[-1] == {"role": "assistant", "content": reply.strip()}
    assert dropped and chat.messages[0] == {"role": "system", "content": "Be kind."}
    assert chat.turns[-2] == {"role": "user", "content": "eleven twelve thirteen fourteen"}
    assert len(chat._render(chat.turns[:-1])) + 20 <= model.config.max_positions
    with pytest.raises(lmatlas.LmatlasError, match="more than the 44 the model has room for"):
        list(chat.reply("word " * 60))
    assert chat.turns[-2]["content"] == "eleven twelve thirteen fourteen"  # the refused message is not kept


def test_a_model_without_a_chat_template(gpt2_folder, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi"))
    assert main(["chat", "--model", str(gpt2_folder)]) == 1
    err = capsys.readouterr().err
    assert "has no chat template" in err and err.count("\n") == 1
