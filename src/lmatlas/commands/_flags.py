"""The library's errors name its Python arguments (``batch_size``, ``truncation=True``); a
command-line user typed flags. ``in_flags`` writes a message with the flags instead, from the
table of the command that ran (``FLAGS`` below, and the command's own via ``set_defaults(flags=...)``)."""

from __future__ import annotations

import re

# Arguments that every command spelling them takes under the same flag.
FLAGS = {"batch_size": "--batch-size", "model": "--model", "max_new_tokens": "--max-new-tokens",
         "quantize": "--quantize", "dequantize": "--dequantize"}


def in_flags(message: str, flags: dict[str, str], words: bool = False) -> str:
    """``message`` with each argument of ``flags`` written as its flag: ``name=True`` as the
    flag alone, ``name=VALUE`` as ``--flag VALUE``, ``name=`` as the flag; a name with an
    underscore (never an ordinary word), or any name with ``words``, is replaced where it
    stands alone too; a key with a space is a phrase, replaced as it is."""
    for name, flag in sorted(flags.items(), key=lambda kv: -len(kv[0])):
        if " " in name:  # a phrase, replaced as it is
            message = message.replace(name, flag)
            continue
        # Not inside another identifier or a path: no letter, digit, _, -, . or / around it.
        edge_l, edge_r = r"(?<![\w\-./])", r"(?![\w\-/])"
        message = re.sub(edge_l + re.escape(name) + r"=True\b", flag, message)
        message = re.sub(edge_l + re.escape(name) + r"=(?=[^\s,;:)]+)", flag + " ", message)
        message = re.sub(edge_l + re.escape(name) + r"=", flag, message)
        if words or "_" in name:
            message = re.sub(edge_l + re.escape(name) + edge_r, flag, message)
    return message


def dashed(names) -> dict[str, str]:
    """Arguments whose flag is their name with dashes: ``top_k`` -> ``--top-k``."""
    return {name: "--" + name.replace("_", "-") for name in names}


__all__ = ["FLAGS", "dashed", "in_flags"]
