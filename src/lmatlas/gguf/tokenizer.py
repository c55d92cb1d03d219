"""A GGUF file's tokenizer: the vocabulary, merges or scores, special tokens and chat template
its ``tokenizer.*`` metadata holds, built as the same ``tokenizers`` pipeline transformers' GGUF
converter builds: byte-level BPE for ``tokenizer.ggml.model`` = gpt2, SentencePiece's BPE (with
byte fallback) for llama."""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as RustTokenizer

from ..errors import LmatlasError
from ..tokenizer.backends import bytelevel_bpe
from ..tokenizer.core import Tokenizer
from .reader import GGUFFile, open_gguf

# llama.cpp's token types (tokenizer.ggml.token_type): control tokens are special (skipped when
# decoding with skip_special_tokens); user-defined ones are matched whole but decode as text.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6


def _digits_then_gpt2():
    # SmolLM's split: every digit on its own, then GPT-2's pattern (its tokenizer.json's pipeline).
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )


# The splits of Qwen2 and Llama 3 (their tokenizer.json's): contractions, letters with one
# leading non-letter, digits (Qwen2: one by one; Llama 3: up to three), punctuation runs,
# newlines, spaces.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = _QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")


def _split(pattern: str):
    def build():
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )

    return build


# tokenizer.ggml.pre (llama.cpp's name for how text is split before BPE) -> the pre-tokenizer,
# and the normalizer that goes with it (Qwen2 composes the text to NFC first).
PRE_TOKENIZERS = {
    "default": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False),
    "gpt-2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False),
    "smollm": _digits_then_gpt2,
    "qwen2": _split(_QWEN2_SPLIT),
    # transformers 4.57.6 splits these with GPT-2's pattern; llama.cpp, Llama 3's own
    # tokenizer.json and newer transformers with Llama 3's.
    "llama-bpe": _split(_LLAMA3_SPLIT),
}
NORMALIZERS = {"qwen2": normalizers.NFC}


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


def _bytelevel(file: GGUFFile, tokens: list[str]) -> RustTokenizer:
    """``tokenizer.ggml.model`` = gpt2: GPT-2's byte-level BPE over the tokens and merges."""
    merges: list[str] = file.require("tokenizer.ggml.merges", "a byte-level BPE tokenizer")
    pre = file.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise LmatlasError(f"{file.path}: tokenizer.ggml.pre is {pre!r}; lmatlas knows {', '.join(PRE_TOKENIZERS)}")
    backend = bytelevel_bpe({token: i for i, token in enumerate(tokens)}, _pairs(file, merges), PRE_TOKENIZERS[pre]())
    if pre in NORMALIZERS:
        backend.normalizer = NORMALIZERS[pre]()
    return backend


def _pairs(file: GGUFFile, merges: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for merge in merges:
        pair = tuple(merge.split(" "))
        if len(pair) != 2:
            raise LmatlasError(f"{file.path}: tokenizer.ggml.merges holds {merge!r}, not a pair of tokens")
        pairs.append(pair)
    return pairs


def merges_from_scores(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """The merges of a SentencePiece BPE vocabulary that stores only scores, in the order
    transformers' GGUF converter derives them (unlike its converter of a tokenizer.model, see
    ``tokenizer.backends``): every split of a token into two tokens, the splits of one token by
    the parts' scores (highest first), then all by the whole token's score, stably."""
    score = dict(zip(tokens, scores))
    merges = []
    for piece, piece_score in score.items():
        splits = [(piece[:i], piece[i:], piece_score) for i in range(1, len(piece))]
        splits = [m for m in splits if m[0] in score and m[1] in score]
        splits.sort(key=lambda m: (score[m[0]], score[m[1]]), reverse=True)
        merges += splits
    merges.sort(key=lambda m: m[2], reverse=True)
    return [(left, right) for left, right, _ in merges]


def spm_normalizer(prefix: bool):
    """Spaces as "▁", and one before the text when ``prefix``."""
    steps = [normalizers.Prepend("▁")] if prefix else []
    return normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])


def _sentencepiece(file: GGUFFile, tokens: list[str]) -> RustTokenizer:
    """``tokenizer.ggml.model`` = llama: SentencePiece's BPE with byte fallback, spaces as "▁"
    and one before the text (unless ``tokenizer.ggml.add_space_prefix`` is false), as
    transformers' GGUF converter builds it (Llama's legacy normalizer)."""
    merges = file.get("tokenizer.ggml.merges")
    if merges:
        pairs = _pairs(file, merges)
    else:
        scores = file.require("tokenizer.ggml.scores", "a SentencePiece tokenizer without merges")
        if len(scores) != len(tokens):
            raise LmatlasError(f"{file.path}: tokenizer.ggml.scores holds {len(scores)} scores for {len(tokens)} tokens")
        pairs = merges_from_scores(tokens, scores)
    unk = _token(tokens, file, "unknown_token_id")
    model = models.BPE({t: i for i, t in enumerate(tokens)}, pairs, unk_token=unk, fuse_unk=True, byte_fallback=True)
    backend = RustTokenizer(model)
    prefix = bool(file.get("tokenizer.ggml.add_space_prefix", True))
    backend.normalizer = spm_normalizer(prefix)
    steps = [decoders.ByteFallback(), decoders.Fuse(), decoders.Replace("▁", " ")]
    backend.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return backend


# tokenizer.ggml.model -> (the backend, whether a bos token starts each text when the file does
# not say: llama.cpp's default, and transformers' Llama tokenizer's).
KINDS = {"gpt2": (_bytelevel, False), "llama": (_sentencepiece, True)}


def read_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer a GGUF file's metadata describes."""
    file = open_gguf(path)
    kind = file.require("tokenizer.ggml.model", "a tokenizer")
    if kind not in KINDS:
        raise LmatlasError(
            f"{path}: tokenizer.ggml.model is {kind!r}; lmatlas reads GGUF tokenizers of kind "
            "gpt2 (byte-level BPE) and llama (SentencePiece BPE)"
        )
    tokens: list[str] = file.require("tokenizer.ggml.tokens", "a tokenizer")
    build, bos_by_default = KINDS[kind]
    backend = build(file, tokens)
    vocab = {token: i for i, token in enumerate(tokens)}

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
    backend.post_processor = _template(file, specials, vocab, bos_by_default)
    tokenizer = Tokenizer(
        backend,
        specials=specials,
        additional_special_tokens=[t for t in control if t not in specials.values()],
        name_or_path=str(path),
    )
    tokenizer.chat_template = _chat_template(file)
    return tokenizer


def _template(file: GGUFFile, specials: dict, vocab: dict[str, int], bos_by_default: bool):
    """bos / eos around each text where the metadata asks for them (``add_bos_token``,
    ``add_eos_token``); None when it asks for neither."""
    ends = {}
    for side, key, default in (("bos_token", "add_bos_token", bos_by_default), ("eos_token", "add_eos_token", False)):
        if file.get(f"tokenizer.ggml.{key}", default):
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
