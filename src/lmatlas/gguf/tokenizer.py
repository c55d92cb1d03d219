"""A GGUF file's tokenizer: the vocabulary, merges, special tokens and chat template its
``tokenizer.*`` metadata holds, built as the same ``tokenizers`` pipeline a Hugging Face folder of
the model gives (byte-level BPE for ``tokenizer.ggml.model`` = gpt2)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, pre_tokenizers, processors

from ..errors import LmatlasError
from ..tokenizer.backends import bytelevel_bpe
from ..tokenizer.core import Tokenizer
from .reader import GGUFFile

# llama.cpp's token types (tokenizer.ggml.token_type): control tokens are special (skipped when
# decoding with skip_special_tokens); user-defined ones are matched whole but decode as text.
CONTROL, USER_DEFINED = 3, 4


def _digits_then_gpt2():
    # SmolLM's split: every digit on its own, then GPT-2's pattern (its tokenizer.json's pipeline).
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )


# tokenizer.ggml.pre (llama.cpp's name for how text is split before BPE) -> the pre-tokenizer.
PRE_TOKENIZERS = {
    "default": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False),
    "gpt-2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False),
    "smollm": _digits_then_gpt2,
}


def _token(tokens: list[str], file: GGUFFile, key: str) -> str | None:
    index = file.get(f"tokenizer.ggml.{key}")
    if index is None:
        return None
    if not 0 <= int(index) < len(tokens):
        raise LmatlasError(f"{file.path}: tokenizer.ggml.{key} is {index}, outside its {len(tokens)} tokens")
    return tokens[int(index)]


def _chat_template(file: GGUFFile) -> str | dict[str, str] | None:
    """``tokenizer.chat_template``, and the named ones (``tokenizer.chat_template.NAME``) as a
    dict with the first as "default", as transformers keeps several."""
    named = {
        key.removeprefix("tokenizer.chat_template."): value
        for key, value in file.metadata.items()
        if key.startswith("tokenizer.chat_template.") and isinstance(value, str)
    }
    default = file.get("tokenizer.chat_template")
    if not named:
        return default or None
    return ({"default": default} if default else {}) | named


def read_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer a GGUF file's metadata describes."""
    file = GGUFFile(path)
    kind = file.require("tokenizer.ggml.model", "a tokenizer")
    if kind != "gpt2":
        raise LmatlasError(
            f"{path}: tokenizer.ggml.model is {kind!r}; lmatlas reads GGUF tokenizers of kind gpt2 (byte-level BPE)"
        )
    tokens: list[str] = file.require("tokenizer.ggml.tokens", "a tokenizer")
    merges: list[str] = file.require("tokenizer.ggml.merges", "a byte-level BPE tokenizer")
    pre = file.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise LmatlasError(f"{path}: tokenizer.ggml.pre is {pre!r}; lmatlas knows {', '.join(PRE_TOKENIZERS)}")
    vocab = {token: i for i, token in enumerate(tokens)}
    pairs = []
    for merge in merges:
        pair = tuple(merge.split(" "))
        if len(pair) != 2:
            raise LmatlasError(f"{path}: tokenizer.ggml.merges holds {merge!r}, not a pair of tokens")
        pairs.append(pair)
    backend = bytelevel_bpe(vocab, pairs, PRE_TOKENIZERS[pre]())

    types = file.get("tokenizer.ggml.token_type") or []
    control = [t for t, kind in zip(tokens, types) if kind == CONTROL]
    backend.add_tokens(
        [AddedToken(t, normalized=False, special=kind == CONTROL) for t, kind in zip(tokens, types)
         if kind in (CONTROL, USER_DEFINED)]
    )  # fmt: skip
    specials = {
        "bos_token": _token(tokens, file, "bos_token_id"),
        "eos_token": _token(tokens, file, "eos_token_id"),
        "unk_token": _token(tokens, file, "unknown_token_id"),
        "pad_token": _token(tokens, file, "padding_token_id"),
    }
    backend.post_processor = _template(file, specials, vocab)
    tokenizer = Tokenizer(
        backend,
        specials=specials,
        additional_special_tokens=[t for t in control if t not in specials.values()],
        name_or_path=str(path),
    )
    tokenizer.chat_template = _chat_template(file)
    return tokenizer


def _template(file: GGUFFile, specials: dict, vocab: dict[str, int]):
    """bos / eos around each text where the metadata asks for them (``add_bos_token``,
    ``add_eos_token``); None when it asks for neither."""
    ends = {}
    for side, key in (("bos_token", "add_bos_token"), ("eos_token", "add_eos_token")):
        if file.get(f"tokenizer.ggml.{key}", False):
            if specials[side] is None:
                raise LmatlasError(f"{file.path}: tokenizer.ggml.{key} is set, but the file names no {side}")
            ends[side] = [specials[side]]
    if not ends:
        return None
    bos, eos = ends.get("bos_token", []), ends.get("eos_token", [])
    return processors.TemplateProcessing(
        single=" ".join([*bos, "$A", *eos]),
        pair=" ".join([*bos, "$A", *eos, *bos, "$B:1", *eos]),
        special_tokens=[(t, vocab[t]) for t in dict.fromkeys(bos + eos)],
    )
