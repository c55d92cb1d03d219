"""Topic modelling: embeddings -> t-SNE -> HDBSCAN -> class-based TF-IDF keywords, the JSON and the
plot of `lmatlas topics`, and its errors."""

from __future__ import annotations

import builtins
import json
import random

import numpy as np
import pytest

from lmatlas import LmatlasError
from lmatlas.cli import main
from lmatlas.topics import find_topics

from .paths import data_file

THEMES = {
    "cooking": (["I cooked", "She baked", "We roasted", "He simmered", "They fried"],
                ["garlic pasta", "a chicken stew", "tomato soup", "a lemon cake", "spiced rice", "onion bread"],
                ["in the oven for dinner", "with fresh herbs from the garden", "using grandma's recipe",
                 "and served it with butter", "for the family lunch"]),
    "football": (["The striker scored", "Our keeper saved", "The defender blocked", "The midfielder passed", "The coach praised"],
                 ["a late goal", "a penalty kick", "a corner", "the ball", "the free kick", "a header"],
                 ["in the final minute of the match", "before the referee blew the whistle", "against the league champions",
                  "as the stadium cheered", "during the cup semifinal"]),
    "space": (["The telescope observed", "Astronomers measured", "The rover photographed", "NASA launched a probe toward",
               "The astronaut described"],
              ["a distant galaxy", "the rings of Saturn", "a red dwarf star", "craters on Mars", "a comet", "the Moon's orbit"],
              ["from the space station", "with an infrared camera", "after years of planning", "near the edge of the solar system",
               "during the eclipse"]),
}


def themed_texts(per_theme: int = 45, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, themes = [], []
    for theme, (subjects, objects, endings) in THEMES.items():
        seen = set()
        while len(seen) < per_theme:
            seen.add(f"{rng.choice(subjects)} {rng.choice(objects)} {rng.choice(endings)}.")
        texts += sorted(seen)
        themes += [theme] * per_theme
    return texts, themes


@pytest.mark.usefixtures("one_thread")
def test_topics_recover_the_themes():
    texts, themes = themed_texts()
    result = find_topics(texts, min_topic_size=10, reduce_outliers=True)
    found = [t for t in result.topics if t.topic >= 0]
    assert len(found) >= 3 and sum(t.size for t in result.topics) == len(texts)
    assert [t.size for t in found] == sorted((t.size for t in found), reverse=True)  # largest first
    # each topic holds texts of one theme, and its keywords come from that theme
    for t in found:
        members = [themes[i] for i in np.flatnonzero(result.assignments == t.topic)]
        theme = max(set(members), key=members.count)
        assert members.count(theme) / len(members) > 0.9, (t.name, members)
        vocabulary = " ".join(w for part in THEMES[theme] for w in part).lower()
        assert all(w in vocabulary for w, _ in t.keywords[:3]), (theme, t.keywords)
        assert all(text in texts for text in t.representative) and len(t.representative) == 3
    # every theme is found
    covered = {themes[i] for t in found for i in np.flatnonzero(result.assignments == t.topic)}
    assert covered == set(THEMES)


def test_topics_command_on_sst2(tmp_path, capsys):
    """A few hundred SST-2 sentences: the JSON (topics, sizes, keywords, representative texts,
    each input's topic) and the plot."""
    rows = data_file("sst2", "dev.tsv").read_text(encoding="utf-8").splitlines()
    chosen = [r for r in rows[1:] if len(r.split("\t")[0].split()) >= 8][:300]
    src = tmp_path / "sst2.tsv"
    src.write_text("sentence\tlabel\n" + "\n".join(chosen) + "\n", encoding="utf-8")
    out, plot = tmp_path / "topics.json", tmp_path / "topics.png"
    code = main(["topics", "-i", str(src), "--column", "sentence", "--min-topic-size", "8",
                 "-o", str(out), "--plot", str(plot)])
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    topics, docs = data["topics"], data["documents"]
    assert len([t for t in topics if t["topic"] >= 0]) >= 2
    assert printed.splitlines()[0].endswith("topics in 300 texts")
    assert sum(t["size"] for t in topics) == len(docs) == 300
    assert [d["line"] for d in docs] == list(range(2, 302))
    assert [d["text"] for d in docs] == [c.split("\t")[0] for c in chosen]
    for t in topics:
        assert len(t["keywords"]) == 10 and all(k["weight"] > 0 for k in t["keywords"])
        assert t["size"] == sum(d["topic"] == t["topic"] for d in docs)
        assert t["name"].startswith(f"{t['topic']}_")
        assert 1 <= len(t["representative"]) <= 3
        assert all(d["topic"] == t["topic"] for d in docs if d["text"] in t["representative"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20000


def test_topics_errors(tmp_path, monkeypatch, capsys):
    src = tmp_path / "few.txt"
    src.write_text("one text\nanother text\n", encoding="utf-8")
    assert main(["topics", "-i", str(src)]) == 1
    assert "2 texts are too few for topics of at least 10 texts" in capsys.readouterr().err
    table = tmp_path / "t.csv"
    table.write_text("review,stars\ngood,5\n", encoding="utf-8")
    assert main(["topics", "-i", str(table)]) == 1
    assert "no 'text' column (the columns are: review, stars)" in capsys.readouterr().err
    assert main(["topics", "-i", str(src), "--plot", str(tmp_path / "map.jpg")]) == 1
    assert "--plot" in (err := capsys.readouterr().err) and "must end in .png, .pdf, .svg" in err
    with pytest.raises(LmatlasError, match="min_topic_size must be an integer of at least 2"):
        find_topics(["a", "b"], min_topic_size=1)

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(LmatlasError, match=r"needs scikit-learn .*pip install 'lmatlas\[topics\]'"):
        find_topics(["a"] * 30)
