"""Progress of the long commands (embed, search build, topics): a bar when standard error is a
terminal (a pseudo-terminal here), none when it is piped or with --no-progress."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def on_terminal(args: list[str]) -> tuple[int, str]:
    """Run the command with standard error on a pseudo-terminal: exit status and what it showed."""
    master, slave = pty.openpty()
    # A terminal 100 columns wide (a new pseudo-terminal has none, where a bar has no room).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    p = subprocess.run([sys.executable, "-m", "lmatlas", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=slave, env=_env())
    os.close(slave)
    reader.join()
    os.close(master)
    return p.returncode, shown.decode("utf-8", "replace")


def piped(args: list[str]) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "lmatlas", *args], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, env=_env())
    return p.returncode, p.stderr


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    """Eighty short texts of two kinds (films, food), one per line."""
    films = ["The film was wonderful and the actors were great", "A boring film with bad acting",
             "I loved the movie and its music"]
    food = ["The soup was salty and the bread stale", "Great pasta and a friendly waiter",
            "The restaurant served cold pizza"]
    path = tmp_path_factory.mktemp("texts") / "reviews.txt"
    path.write_text("".join(f"{films[i % 3]}, review {i}\n{food[i % 3]}, review {i}\n" for i in range(40)),
                    encoding="utf-8")
    return path


def _commands(texts: Path, out: Path) -> dict[str, list[str]]:
    out.mkdir(exist_ok=True)
    return {
        "embed": ["embed", "-i", str(texts), "-o", str(out / "v.npy")],
        "search": ["search", "build", str(out / "index"), "--from", str(texts)],
        "topics": ["topics", "-i", str(texts), "--min-topic-size", "8", "-o", str(out / "topics.json")],
    }


def _has_bar(stderr: str) -> bool:
    # tqdm's bar: a percentage and a rate, redrawn in place with carriage returns.
    return "\r" in stderr and "it/s" not in stderr and any(u in stderr for u in ("text/s", "passage/s", "s/text",
                                                                                  "s/passage"))


@pytest.mark.parametrize("command", ["embed", "search", "topics"])
def test_a_bar_on_a_terminal_none_when_piped(command, texts, tmp_path):
    code, shown = on_terminal(_commands(texts, tmp_path / "tty")[command])
    assert code == 0, shown
    assert _has_bar(shown) and "100%" in shown, shown
    code, stderr = piped(_commands(texts, tmp_path / "pipe")[command])
    assert code == 0, stderr
    assert not _has_bar(stderr) and "%|" not in stderr, stderr


def test_no_progress_on_a_terminal(texts, tmp_path):
    code, shown = on_terminal([*_commands(texts, tmp_path)["embed"], "--no-progress"])
    assert code == 0 and "%|" not in shown and not _has_bar(shown), shown
