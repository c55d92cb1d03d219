"""lmatlas: the landmark language models, from scratch in PyTorch.

The public API; everything else is an implementation detail.
"""

from .errors import LmatlasError
from .loader import load

__all__ = ["LmatlasError", "load"]
__version__ = "0.1.0"
