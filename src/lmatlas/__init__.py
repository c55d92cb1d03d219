"""lmatlas: the landmark language models, from scratch in PyTorch.

The public API; everything else is an implementation detail.
"""

from .embeddings import embed, similarity
from .errors import LmatlasError
from .generation import stream
from .loader import load
from .pipelines import pipeline
from .tokenizer import load_tokenizer

__all__ = ["LmatlasError", "embed", "load", "load_tokenizer", "pipeline", "similarity", "stream"]
__version__ = "0.1.0"
