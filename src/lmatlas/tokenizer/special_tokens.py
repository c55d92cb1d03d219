"""Special tokens: how a config names them (a string, or Hugging Face's serialized AddedToken),
their ids for a template, and registering them with the backend in Hugging Face's order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken
from tokenizers import Tokenizer as RustTokenizer

from ..errors import LmatlasError

if TYPE_CHECKING:
    from .families import Family

# The order HF lists special tokens in (all_special_tokens, and the order they are added).
SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# The flags of an AddedToken a config may set (besides "special").
_FLAGS = ("single_word", "lstrip", "rstrip", "normalized")


def token_content(value: Any) -> str | None:
    """The text of a special token as a config gives it (None stays None)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise LmatlasError(f"a special token in the tokenizer config is neither a string nor a token: {value!r}")


def _as_added_token(value: Any, **defaults) -> AddedToken:
    """A special token from a config: a plain string, or HF's serialized AddedToken dict."""
    if isinstance(value, dict):
        flags = {k: value[k] for k in _FLAGS if k in value}
        return AddedToken(value["content"], **{**defaults, **flags, "special": True})
    return AddedToken(value, **defaults, special=True)


class SpecialIds:
    """Special tokens of a tokenizer being built: ``ids.cls`` is ``(token, id)``."""

    def __init__(self, specials: dict[str, str | None], backend: RustTokenizer, source: str):
        self._specials, self._backend, self._source = specials, backend, source

    def __getattr__(self, short: str) -> tuple[str, int]:
        token = self._specials.get(short + "_token")
        token_id = None if token is None else self._backend.token_to_id(token)
        if token_id is None:
            raise LmatlasError(f"{self._source} has no {short} token, which this tokenizer puts around each text")
        return token, token_id

    def token(self, token: str) -> int:
        """The id of a token the template names itself (a language code)."""
        token_id = self.find(token)
        if token_id is None:
            raise LmatlasError(f"{self._source} has no token {token!r} in its vocabulary")
        return token_id

    def find(self, token: str) -> int | None:
        """The id of ``token``, or None if the vocabulary lacks it."""
        return self._backend.token_to_id(token)


def add_special_tokens(backend: RustTokenizer, cfg: dict, family: Family, from_files: bool) -> None:
    """Register the config's added tokens and every special token with the backend.

    Tokens already in the vocabulary keep their ids (the backend only updates their flags); new
    ones get the next ids, in HF's order: the config's added_tokens_decoder by id, then the
    special tokens in SPECIAL_ATTRS order, then additional_special_tokens. A tokenizer.json
    already lists its special tokens, so only missing ones are added; built from the original
    files, every special token is (re-)registered with the family's flags, as HF does.
    """
    present = {repr(t) for t in backend.get_added_tokens_decoder().values()}
    to_add: list[AddedToken] = []
    decoder = cfg.get("added_tokens_decoder") or {}
    raw = [(attr, cfg.get(attr, family.specials.get(attr))) for attr in SPECIAL_ATTRS]
    raw += [("additional_special_tokens", t) for t in cfg.get("additional_special_tokens") or []]
    named = {token_content(value) for _, value in raw}
    try:
        for _, value in sorted(decoder.items(), key=lambda kv: int(kv[0])):
            flags = {k: v for k, v in value.items() if k in (*_FLAGS, "special")}
            # HF makes a listed token that the config names a special token special.
            flags["special"] = bool(flags.get("special")) or value["content"] in named
            token = AddedToken(value["content"], **flags)
            if repr(token) not in present:
                to_add.append(token)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise LmatlasError(f"added_tokens_decoder in tokenizer_config.json is malformed: {e}") from e
    seen = {t.content for t in to_add}
    if not from_files:
        seen |= {t.content for t in backend.get_added_tokens_decoder().values()}
    # Pieces the vocabulary itself adds (SentencePiece's control and user-defined ones).
    pieces = {t.content for t in backend.get_added_tokens_decoder().values()} if from_files else set()
    for attr, value in raw:
        content = token_content(value)
        if content is None or content in seen:
            continue
        seen.add(content)
        flagged = attr == "mask_token" and family.mask_flags
        if isinstance(value, str) and content in pieces and not flagged:
            continue  # HF keeps such a piece as it is (XLNet's <eod> and <eop> stay non-special)
        if flagged:
            defaults = family.mask_flags
        else:
            defaults = {"normalized": from_files and family.specials_normalized}
        to_add.append(_as_added_token(value, **defaults))
    if to_add:
        backend.add_tokens(to_add)
