"""Hybrid search: the three modes, snippets, formats (HTML, PDF, JSON Lines, source), the path
filter, the HNSW graph, safety (lock, stopped builds, older formats) and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmatlas import LmatlasError
from lmatlas import search as search_module
from lmatlas.cli import main
from lmatlas.search import Index, fuse

DOCS = {
    "cats.md": "# Cats\n\nCats are small domesticated felines that purr and chase mice.\n\nThey sleep most of the day.\n",
    "finance.txt": "The central bank raised interest rates to fight inflation.\nBond yields rose sharply.\n",
    "sub/cooking.md": "# Baking bread\n\nKnead the dough, let it rise, and bake it in a hot oven until golden.\n",
    "code/tools.py": "def frobnicate_widget(x):\n    \"\"\"Turn a widget inside out.\"\"\"\n    return -x\n",
}

PAGE = """<html><head><title>T</title><script>var tracking = 'zanzibar';</script></head>
<body><nav><a href="/">Home</a> <a href="/x">Zanzibar travel deals</a></nav>
<header>Site banner about zanzibar</header>
<main><h1>Volcanoes</h1><p>Magma rises through the crust and erupts as lava from a volcano.</p>
<ul><li>Basalt flows are fluid.</li></ul></main>
<footer>Copyright zanzibar corp</footer></body></html>"""


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture()
def built(corpus, tmp_path):
    index = Index(tmp_path / "index")
    index.build([corpus])
    return index


def test_fusion_rules():
    sem = [(1, 0.9), (2, 0.5), (3, 0.1)]
    lex = [(3, 12.0), (1, 2.0)]
    rrf = fuse([sem, lex], "rrf")
    assert [row for row, _ in rrf] == [1, 3, 2]  # 1: ranks 1 and 2; 3: ranks 3 and 1
    assert rrf[0][1] == pytest.approx(1 / 61 + 1 / 62)
    weighted = dict(fuse([sem, lex], "weighted"))
    assert weighted[3] == pytest.approx(0.0 + 1.0) and weighted[1] == pytest.approx(1.0 + 0.0)


def test_modes_and_snippets(built):
    # A made-up word only BM25 can find; a paraphrase only meaning can.
    lex = built.query("frobnicate", k=1, mode="lexical")
    assert lex[0].source.endswith("tools.py") and lex[0].line == 1
    assert "frobnicate" in lex[0].snippet[slice(*lex[0].highlights[0])]
    assert built.query("frobnicate", k=1)[0].source.endswith("tools.py")  # hybrid keeps it
    sem = built.query("kittens catching rodents", k=1, mode="semantic")
    assert sem[0].source.endswith("cats.md")
    hyb = built.query("monetary policy and the price of borrowing", k=4)
    assert hyb[0].source.endswith("finance.txt")
    # Stemmed highlights: "rates" and "raising" match "raised"/"rates"; "the" is not highlighted.
    hit = built.query("the raising of rates", k=1, mode="lexical")[0]
    words = {hit.snippet[a:b].lower() for a, b in hit.highlights}
    assert words == {"raised", "rates"}
    with pytest.raises(LmatlasError, match="--mode must be one of"):
        built.query("cats", mode="fuzzy")
    with pytest.raises(LmatlasError, match="has no words to look up"):
        built.query("?!", mode="lexical")


def test_path_filter(built, corpus):
    hits = built.query("food and animals", k=5, path="*.md")
    assert hits and all(h.source.endswith(".md") for h in hits)
    hits = built.query("bread", k=5, path=str(corpus / "sub" / "*"))
    assert {h.source for h in hits} == {str(corpus / "sub" / "cooking.md")}
    with pytest.raises(LmatlasError, match="matches --path nothing/"):
        built.query("bread", path="nothing/*")


def test_html_pdf_jsonl(tmp_path):
    from fpdf import FPDF

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "page.html").write_text(PAGE, encoding="utf-8")
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in ("The first page is about gardening and tomatoes.", "The second page explains glaciers and ice ages."):
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
    pdf.output(str(docs / "book.pdf"))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    (docs / "notes.jsonl").write_text(
        json.dumps({"id": 1, "body": "Penguins live in the southern hemisphere."}) + "\n\n"
        + json.dumps({"id": 2, "body": "Saturn has prominent rings of ice."}) + "\n", encoding="utf-8"
    )
    index = Index(tmp_path / "index")
    stats = index.build([docs], text_field="body")
    assert [s for s, _ in stats["skipped"]] == [str(docs / "broken.pdf")]
    assert "not a readable PDF" in stats["skipped"][0][1]
    assert stats["embedded"] == 3

    glacier = index.query("glaciers", k=1)[0]
    assert glacier.source.endswith("book.pdf") and glacier.page == 2
    assert index.query("tomatoes", k=1, mode="lexical")[0].page == 1
    lava = index.query("lava volcano", k=1)[0]
    assert lava.source.endswith("page.html") and "Magma rises" in lava.text
    assert "zanzibar" not in lava.text.lower() and "Home" not in lava.text  # menus, banner, footer, script dropped
    assert index.query("zanzibar", k=3, mode="lexical") == []
    saturn = index.query("Saturn rings", k=1)[0]
    assert saturn.source.endswith("notes.jsonl") and saturn.line == 3  # the record's line

    # Records without the field are skipped with a notice (a folder may hold other JSON Lines).
    stats = Index(tmp_path / "other").build([docs / "notes.jsonl", docs / "page.html"])
    assert "needs --text-field" in dict(stats["skipped"])[str(docs / "notes.jsonl")]
    with pytest.raises(LmatlasError, match="line 1 has no text field 'text'"):
        Index(tmp_path / "other2").build([docs / "notes.jsonl"], text_field="text")


def test_not_text_refused(tmp_path, corpus):
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(LmatlasError, match=r"photo.png: not a format search reads"):
        Index(tmp_path / "i").build([tmp_path / "photo.png"])
    (corpus / "binary.txt").write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(LmatlasError, match=r"binary.txt: not text \(it holds NUL bytes\)"):
        Index(tmp_path / "i").build([corpus])


def test_empty_file_skipped_and_foreign_folder_refused(tmp_path, corpus, capsys):
    (corpus / "blank.md").write_text("  \n\n \t\n", encoding="utf-8")
    (corpus / "empty.txt").write_text("", encoding="utf-8")
    assert main(["search", "build", str(tmp_path / "index"), "--from", str(corpus)]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "blank.md: empty" in err and "empty.txt: empty" in err
    with pytest.raises(LmatlasError, match="no text to index"):
        Index(tmp_path / "i2").build([corpus / "empty.txt"])

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(LmatlasError, match="foreign: this folder holds other files and is not a search index"):
        Index(foreign).build([corpus])
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_locked_index_refused(built, corpus, tmp_path):
    from filelock import FileLock

    with FileLock(str(tmp_path / "index" / "build.lock")):
        with pytest.raises(LmatlasError, match=r"another build of this index is running \(it holds .*build.lock\)"):
            Index(tmp_path / "index").build([corpus])
    built.build([corpus])  # released: builds again


def test_stopped_build_leaves_previous_index(built, corpus, tmp_path, monkeypatch):
    before = [(h.source, h.line, round(h.score, 6)) for h in built.query("interest rates", k=4)]
    (corpus / "finance.txt").write_text("Stock markets fell after the announcement.\n", encoding="utf-8")
    (corpus / "new.md").write_text("Comets have tails of dust and gas.\n", encoding="utf-8")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill would, after vectors and passages were written

    monkeypatch.setattr(search_module, "write_text_atomic", stop)
    with pytest.raises(KeyboardInterrupt):
        built.build([corpus])
    monkeypatch.undo()
    assert [(h.source, h.line, round(h.score, 6)) for h in built.query("interest rates", k=4)] == before
    assert not any(h.source.endswith("new.md") for h in built.query("comets", k=4, mode="lexical"))

    stats = built.build([corpus])  # the next build clears what the stopped one left
    assert stats["embedded"] == 2
    assert built.query("comets tails", k=1)[0].source.endswith("new.md")
    assert built.query("stock markets fell", k=1, mode="lexical")[0].source.endswith("finance.txt")
    lexical = search_module.LexicalIndex(tmp_path / "index" / json.loads(built.manifest_file.read_text())["lexical"])
    rows = [row for row, _ in lexical.search("interest rates stock markets comets cats bread widget", 100)]
    assert sorted(rows) == sorted(set(rows)) and len(rows) == stats["chunks"]  # one document per live row


def test_older_format(tmp_path, corpus):
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"version": 2, "model": "default", "files": {}}))
    (old / "vectors.npy").write_bytes(b"")
    (old / "chunks.jsonl").write_text("")
    with pytest.raises(LmatlasError, match=r"old: the search index is in format 2, written by an older lmatlas; this one reads format 3"):
        Index(old).query("cats")
    assert main(["search", "query", str(old), "cats"]) == 1
    stats = Index(old).build([corpus])  # building it again brings it to the new format
    assert stats["embedded"] == 4
    assert not (old / "vectors.npy").exists() and not (old / "chunks.jsonl").exists()
    assert Index(old).query("cats", k=1)[0].source.endswith("cats.md")


def test_graph_search_and_incremental_updates(corpus, tmp_path):
    """Above the threshold (here 2 passages) the HNSW graph answers; it follows added, changed and
    removed files, and finds what exact search finds."""
    index = Index(tmp_path / "index", ann_min_rows=2)
    index.build([corpus])
    manifest = json.loads(index.manifest_file.read_text())
    assert manifest["graph"] and (tmp_path / "index" / manifest["graph"]).exists()
    for q in ("cats", "interest rates", "bread in the oven"):
        approx = [(h.source, h.line) for h in index.query(q, k=3, mode="semantic")]
        exact = [(h.source, h.line) for h in index.query(q, k=3, mode="semantic", exact=True)]
        assert approx == exact
    (corpus / "sub" / "cooking.md").unlink()
    (corpus / "finance.txt").write_text("Stock markets fell after the announcement.\n", encoding="utf-8")
    index.build([corpus])
    new = json.loads(index.manifest_file.read_text())
    assert new["graph"] != manifest["graph"] and not (tmp_path / "index" / manifest["graph"]).exists()
    hits = index.query("bread dough oven baking", k=10, mode="semantic")
    assert not any(h.source.endswith("cooking.md") for h in hits) and len(hits) == 3
    assert index.query("stock market", k=1, mode="semantic")[0].source.endswith("finance.txt")
    vectors = np.memmap(tmp_path / "index" / new["vectors"], dtype=np.float32, mode="r")
    assert vectors.size == new["rows"] * new["dim"]


def test_cli_query_modes(built, tmp_path, capsys):
    assert main(["search", "query", str(tmp_path / "index"), "frobnicate widget", "-k", "1", "--mode", "lexical"]) == 0
    out = capsys.readouterr().out
    assert "tools.py:1" in out and "**frobnicate" in out
    assert main(["search", "query", str(tmp_path / "index"), "cats", "--path", "zzz*"]) == 1
    assert "matches --path zzz*" in capsys.readouterr().err


def test_garbage_rows_are_compacted(corpus, tmp_path, monkeypatch):
    """Rows of changed files stay as garbage until they outweigh the live rows; then the build
    writes a new generation with the live rows alone, unchanged files carried without embedding."""
    monkeypatch.setattr(search_module, "COMPACT_MIN_ROWS", 0)
    index = Index(tmp_path / "index", ann_min_rows=2)
    index.build([corpus])
    first = json.loads(index.manifest_file.read_text())
    (corpus / "finance.txt").write_text("Stock markets fell after the announcement.\n", encoding="utf-8")
    index.build([corpus])
    second = json.loads(index.manifest_file.read_text())
    assert second["generation"] == first["generation"] and second["rows"] == first["rows"] + 1  # appended
    for name in ("cats.md", "sub/cooking.md"):
        (corpus / name).unlink()
    (corpus / "finance.txt").write_text("Gold prices rose to a record.\n", encoding="utf-8")
    stats = index.build([corpus])
    assert (stats["embedded"], stats["reused"], stats["dropped"]) == (1, 1, 2)
    third = json.loads(index.manifest_file.read_text())
    assert third["generation"] == first["generation"] + 1 and third["rows"] == stats["chunks"] == 2
    names = sorted(p.name for p in (tmp_path / "index").iterdir())
    assert names == sorted(["build.lock", "lmatlas-index", "manifest.json", third["vectors"], third["lexical"], third["graph"]])
    assert (tmp_path / "index" / third["vectors"]).stat().st_size == 2 * third["dim"] * 4
    for mode in ("semantic", "lexical", "hybrid"):
        assert index.query("gold prices record", k=1, mode=mode)[0].source.endswith("finance.txt")
    assert index.query("widget inside out", k=1, mode="semantic")[0].source.endswith("tools.py")
    assert index.query("widget inside out", k=1, mode="semantic", exact=True)[0].text.startswith("def frobnicate_widget")


def test_damaged_vectors_named(built, tmp_path):
    manifest = json.loads(built.manifest_file.read_text())
    (tmp_path / "index" / manifest["vectors"]).write_bytes(b"\0" * 8)
    with pytest.raises(LmatlasError, match=r"vectors-1.f32: the search index is damaged \(8 bytes of vectors"):
        built.query("cats", mode="semantic")
    assert built.query("cats", k=1, mode="lexical")[0].source.endswith("cats.md")  # BM25 needs no vectors


KILLED_BUILD = """
import pathlib, sys, time
from lmatlas import search
def hang(*args, **kwargs):  # at the publishing step: vectors appended, passages committed
    pathlib.Path(sys.argv[3]).touch()
    time.sleep(120)
search.write_text_atomic = hang
search.Index(sys.argv[1]).build([sys.argv[2]])
"""


def test_killed_build_leaves_previous_index(built, corpus, tmp_path):
    """A build killed (SIGKILL: no clean-up runs) just before it publishes: the previous index
    answers as before, its lock is free, and the next build clears what the killed one left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    before = [(h.source, h.line, round(h.score, 6)) for h in built.query("interest rates", k=4, mode="semantic")]
    (corpus / "new.md").write_text("Comets have tails of dust and gas.\n", encoding="utf-8")
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(tmp_path / "index"), str(corpus), str(ready)], env=env)
    try:
        for _ in range(1200):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), "the build never reached its publishing step"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [(h.source, h.line, round(h.score, 6)) for h in built.query("interest rates", k=4, mode="semantic")] == before
    assert not any(h.source.endswith("new.md") for h in built.query("comets tails", k=4))
    stats = built.build([corpus])  # the lock died with the process
    assert (stats["embedded"], stats["reused"]) == (1, 4)
    assert built.query("comets tails", k=1)[0].source.endswith("new.md")
