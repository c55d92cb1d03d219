"""GGUF, llama.cpp's single-file format: a model's weights (often quantized), its config and its
tokenizer, all in one file's metadata.

``find_gguf`` says whether a path names one; ``read_model`` gives the config.json-like dict and
the tensors under transformers' names, so ``loader.load`` builds the model through the preset
as for a Hugging Face folder; ``read_tokenizer`` builds the tokenizer and chat template;
``write_gguf`` writes a model (and its tokenizer) as a GGUF file.

The parts: ``reader`` (the file, its metadata, its tensors dequantized), ``config`` (each
architecture's metadata keys and tensor names), ``tokenizer`` and ``writer`` (the reading run
backwards).
"""

from .config import ARCHITECTURES, read_model
from .reader import find_gguf
from .tokenizer import read_tokenizer
from .writer import write_gguf

__all__ = ["ARCHITECTURES", "find_gguf", "read_model", "read_tokenizer", "write_gguf"]
