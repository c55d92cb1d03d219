"""The runtime never imports the reference implementations."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import lmatlas, lmatlas.cli, lmatlas.embeddings, lmatlas.search, lmatlas.tokenizer
lmatlas.cli.build_parser()
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'sentence_transformers'))
print(','.join(bad))
"""


def test_runtime_imports_neither_transformers_nor_sentence_transformers():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the runtime imported {out.stdout.strip()}"


def test_embedding_imports_neither(tmp_path):
    code = CODE.replace("print(", "lmatlas.embeddings.embed(['hello']); print(")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"embedding imported {out.stdout.strip()}"
