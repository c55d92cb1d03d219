"""The lexical half of search: a BM25 index of the passages, kept by Tantivy.

Tantivy (the Rust engine behind Quickwit, through its official Python bindings) ranks by BM25
with English stemming, adds and deletes documents without rebuilding, commits atomically, and
cuts snippets around the words a query matched. It also stores each passage (its source, line,
page and text), so the search index keeps its passages in one place.

Every document carries its ``row``: the passage's row in the vector file. The index's manifest
says which rows are live; rows a build added and never published (it was stopped) are removed by
the next build before it adds its own.
"""

from __future__ import annotations

import re
from pathlib import Path

from .documents import Chunk

WRITER_HEAP = 32_000_000  # bytes buffered before Tantivy writes a segment
SNIPPET_CHARS = 240
ANALYZER = "lmatlas_english"
_WORD = re.compile(r"\w+")


def _schema():
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_integer_field("row", stored=True, indexed=True, fast=True)
    sb.add_text_field("text", stored=True, tokenizer_name=ANALYZER)
    sb.add_text_field("source", stored=True, tokenizer_name="raw")
    sb.add_integer_field("line", stored=True)
    sb.add_integer_field("page", stored=True)  # 0: no page
    return sb.build()


def _analyzer():
    """Words (letters and digits), folded to lower-case ASCII, English stop words dropped (a
    "the" in a question should neither score nor be highlighted), Snowball-stemmed."""
    import tantivy

    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def query_terms(question: str) -> str:
    """The question's words, lower-cased, as Tantivy's query language reads plain terms: no
    operators (AND, OR, NOT are upper-case words there), fields or quotes can slip in."""
    return " ".join(_WORD.findall(question.lower()))


class LexicalIndex:
    def __init__(self, folder: str | Path):
        import tantivy

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        self.index = tantivy.Index(self.schema, path=str(self.folder))
        self.index.register_tokenizer(ANALYZER, _analyzer())

    # -- writing ----------------------------------------------------------------------------

    def _writer(self):
        # One thread: a build shares the machine with the embedding model.
        return self.index.writer(heap_size=WRITER_HEAP, num_threads=1)

    def replace_from(self, first_row: int, rows: list[int], chunks: list[Chunk]) -> None:
        """Drop every document at ``first_row`` or later (left by a stopped build), add ``chunks``
        at ``rows``, and commit."""
        import tantivy

        writer = self._writer()
        writer.delete_documents_by_query(
            tantivy.Query.range_query(self.schema, "row", tantivy.FieldType.Integer, first_row, None)
        )
        for row, c in zip(rows, chunks):
            writer.add_document(
                tantivy.Document(row=row, text=c.text, source=c.source, line=c.line, page=c.page or 0)
            )
        writer.commit()
        writer.wait_merging_threads()

    def delete_rows(self, rows: list[int]) -> None:
        import tantivy

        if not rows:
            return
        writer = self._writer()
        for lo in range(0, len(rows), 10_000):
            writer.delete_documents_by_query(tantivy.Query.term_set_query(self.schema, "row", rows[lo : lo + 10_000]))
        writer.commit()
        writer.wait_merging_threads()

    # -- reading ----------------------------------------------------------------------------

    def _query(self, question: str):
        terms = query_terms(question)
        return self.index.parse_query(terms, ["text"]) if terms else None

    def search(self, question: str, limit: int) -> list[tuple[int, float]]:
        """``(row, BM25 score)`` of the best ``limit`` passages, best first."""
        query = self._query(question)
        if query is None or limit < 1:
            return []
        self.index.reload()
        searcher = self.index.searcher()
        return [(searcher.doc(addr)["row"][0], score) for score, addr in searcher.search(query, limit).hits]

    def passages(self, rows: list[int], question: str) -> dict[int, tuple[Chunk, str, list[tuple[int, int]]]]:
        """For each row: its chunk, and a snippet with the character spans of the question's
        words in it (stemmed as the index stems them)."""
        import tantivy

        if not rows:
            return {}
        self.index.reload()
        searcher = self.index.searcher()
        found = searcher.search(tantivy.Query.term_set_query(self.schema, "row", list(rows)), len(rows) * 2)
        query = self._query(question)
        snippets = None
        if query is not None:
            snippets = tantivy.SnippetGenerator.create(searcher, query, self.schema, "text")
            snippets.set_max_num_chars(SNIPPET_CHARS)
        out = {}
        for _, addr in found.hits:
            doc = searcher.doc(addr)
            row = doc["row"][0]
            chunk = Chunk(doc["source"][0], doc["line"][0], doc["text"][0], doc["page"][0] or None)
            fragment, spans = "", []
            if snippets is not None:
                s = snippets.snippet_from_doc(doc)
                fragment, spans = s.fragment(), [(h.start, h.end) for h in s.highlighted()]
            if not spans:  # no word of the question in it (a semantic hit): its opening
                fragment = chunk.text[:SNIPPET_CHARS]
            out[row] = (chunk, fragment, spans)
        return out
