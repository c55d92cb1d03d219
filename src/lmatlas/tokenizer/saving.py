"""A loaded tokenizer written as a Hugging Face folder (tokenizer.json, tokenizer_config.json),
for a tokenizer with no files of its own: a GGUF file's, whose model is saved after training."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tokenizers import Tokenizer as RustTokenizer

from .core import Tokenizer


def save_tokenizer(tokenizer: Tokenizer, folder: str | os.PathLike) -> Path:
    """Write ``tokenizer`` into ``folder`` so that ``load_tokenizer(folder)`` reads it back: its
    ``tokenizers`` pipeline, special tokens and chat template(s)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backend = RustTokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy, without call settings
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast",
              "clean_up_tokenization_spaces": tokenizer.clean_up_tokenization_spaces, **tokenizer.special_tokens_map}
    template = tokenizer.chat_template
    if isinstance(template, dict):
        config["chat_template"] = [{"name": k, "template": v} for k, v in template.items()]
    elif template:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
    return folder


__all__ = ["save_tokenizer"]
