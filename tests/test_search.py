"""The semantic search engine: chunking, building, incremental rebuilds, querying, bad input."""

from __future__ import annotations

import json
import warnings

import pytest

from lmatlas import LmatlasError
from lmatlas.embeddings import encoder
from lmatlas.search import Index, chunk_text, fit_chunks

DOCS = {
    "cats.md": "# Cats\n\nCats are small domesticated felines that purr and chase mice.\n\nThey sleep most of the day.\n",
    "finance.txt": "The central bank raised interest rates to fight inflation.\nBond yields rose sharply.\n",
    "sub/cooking.md": "# Baking bread\n\nKnead the dough, let it rise, and bake it in a hot oven until golden.\n",
}


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG not text")  # not a text suffix: ignored
    return root


def test_chunks_keep_source_and_line():
    text = "# Title\n\nfirst paragraph\n\n# Second\n\nline a\nline b\n"
    chunks = chunk_text(text, "f.md", max_chars=800)
    assert [(c.line, c.text.splitlines()[0]) for c in chunks] == [(1, "# Title"), (5, "# Second")]


def test_long_text_is_cut_within_budget():
    text = "\n".join(f"sentence number {i} of a long document." for i in range(500))
    chunks = chunk_text(text, "long.txt", max_chars=300)
    assert len(chunks) > 10 and all(len(c.text) <= 300 for c in chunks)
    assert chunks[1].line > chunks[0].line
    one_line = chunk_text("x" * 2000, "one.txt", max_chars=300)
    assert all(len(c.text) <= 300 for c in one_line) and len(one_line) == 7


def test_dense_text_is_cut_to_the_models_token_window(tmp_path):
    """800 characters of code or symbols hold far more than 256 word pieces: such chunks are cut
    again until each fits, so nothing of the file is silently truncated away."""
    enc = encoder(None)
    prose = "\n".join(f"Paragraph {i} talks about cats and dogs." for i in range(3))
    dense = "\n".join("x[i]={a:%d,b:[%d,%d]};" % (i, i + 1, i * 7) for i in range(40))
    text = prose + "\n\n" + dense + "\n"
    chunks = chunk_text(text, "code.md")
    assert max(enc.token_counts([c.text for c in chunks])) > enc.max_seq_length  # the case at hand
    fitted = fit_chunks(chunks, enc.token_counts, enc.max_seq_length)
    assert max(enc.token_counts([c.text for c in fitted])) <= enc.max_seq_length
    assert "".join(c.text for c in fitted).replace("\n", "") == "".join(c.text for c in chunks).replace("\n", "")
    lines = text.splitlines()
    for c in fitted:  # each chunk still starts at its own line
        assert lines[c.line - 1].startswith(c.text.splitlines()[0][:10])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "code.md").write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "longer than 256 tokens were truncated"
        Index(tmp_path / "index").build([tmp_path / "docs"])


def test_build_query_and_incremental_rebuild(corpus, tmp_path):
    index = Index(tmp_path / "index")
    stats = index.build([corpus])
    assert stats["embedded"] == 3 and stats["reused"] == 0
    hits = index.query("What do cats do?", k=2)
    assert hits[0].source.endswith("cats.md") and hits[0].line in (1, 3)
    assert hits[0].score > hits[1].score
    assert index.query("interest rates and inflation", k=1)[0].source.endswith("finance.txt")

    # Change one file, remove another: only the changed one is embedded again.
    (corpus / "finance.txt").write_text("Stock markets fell after the announcement.\n", encoding="utf-8")
    (corpus / "sub" / "cooking.md").unlink()
    stats = index.build([corpus])
    assert (stats["embedded"], stats["reused"], stats["dropped"]) == (1, 1, 1)
    sources = json.loads((tmp_path / "index" / "manifest.json").read_text())["files"]
    assert not any(s.endswith("cooking.md") for s in sources)
    assert not any(h.source.endswith("cooking.md") for h in index.query("bread dough oven", k=5, mode="lexical"))
    assert index.query("stock market", k=1)[0].source.endswith("finance.txt")


def test_non_utf8_file_is_refused_and_index_kept(corpus, tmp_path):
    index = Index(tmp_path / "index")
    index.build([corpus])
    before = (tmp_path / "index" / "manifest.json").read_text()
    (corpus / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(LmatlasError, match=r"latin1.txt: not UTF-8 text"):
        index.build([corpus])
    assert (tmp_path / "index" / "manifest.json").read_text() == before


def test_bad_inputs(corpus, tmp_path):
    with pytest.raises(LmatlasError, match="no such file or folder"):
        Index(tmp_path / "i").build([tmp_path / "nowhere"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LmatlasError, match="no files search reads"):
        Index(tmp_path / "i").build([empty])
    with pytest.raises(LmatlasError, match="no search index here"):
        Index(tmp_path / "nothing").query("anything")
    index = Index(tmp_path / "index")
    index.build([corpus])
    with pytest.raises(LmatlasError, match="the question is empty"):
        index.query("   ")
    with pytest.raises(LmatlasError, match="-k must be at least 1"):
        index.query("cats", k=0)
