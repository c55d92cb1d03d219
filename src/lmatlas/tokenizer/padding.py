"""Padding and truncation: Hugging Face's call arguments (``padding``, ``truncation``,
``max_length``, ...) checked and resolved against ``model_max_length`` into what the backend is
set to for one call."""

from __future__ import annotations

from typing import Any

from ..errors import LmatlasError

# HF's stand-in for "this model has no length limit" (model_max_length when nothing says one).
VERY_LARGE_INTEGER = int(1e30)
# Above this, model_max_length counts as unset when truncation or padding asks for it.
_LARGE_INTEGER = int(1e20)

_PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: None, "do_not_pad": None}
_TRUNCATION = {
    True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
    "only_second": "only_second", False: None, None: None, "do_not_truncate": None,
}  # fmt: skip


def check_side(value: Any, name: str) -> str:
    """``value`` if it is a side padding or truncation can take ("right" or "left")."""
    if value not in ("right", "left"):
        raise LmatlasError(f"{name} must be 'right' or 'left', not {value!r}")
    return value


def resolve_lengths(
    padding: Any,
    truncation: Any,
    max_length: Any,
    stride: Any,
    multiple: Any,
    side: Any,
    model_max_length: int,
    has_pad_token: bool,
) -> tuple[str | None, str | None, int | None]:
    """``(padding, truncation, max_length)`` as the backend takes them: padding "longest",
    "max_length" or None; truncation a strategy or None."""
    pad = _option(_PADDING, padding, "padding")
    trunc = _option(_TRUNCATION, truncation, "truncation")
    if max_length is not None and (type(max_length) is not int or max_length < 1):
        raise LmatlasError(f"max_length must be a positive integer, not {max_length!r}")
    if not isinstance(stride, int) or stride < 0:
        raise LmatlasError(f"stride must be a non-negative integer, not {stride!r}")
    if multiple is not None and (not isinstance(multiple, int) or multiple < 1):
        raise LmatlasError(f"pad_to_multiple_of must be a positive integer, not {multiple!r}")
    if side is not None:
        check_side(side, "padding_side")
    # HF: a max_length alone (no padding, truncation unspecified) means truncate to it.
    if max_length is not None and padding is False and truncation is None:
        trunc = "longest_first"
    # Without max_length, both fall back to model_max_length, or are dropped if it is unset.
    if max_length is None and (pad == "max_length" or trunc):
        if model_max_length > _LARGE_INTEGER:
            pad = None if pad == "max_length" else pad
            trunc = None
        else:
            max_length = model_max_length
    if pad and not has_pad_token:
        raise LmatlasError(
            "padding needs a pad token, and this tokenizer has none (set tokenizer.pad_token, "
            "e.g. to tokenizer.eos_token)"
        )
    if trunc and pad and multiple and max_length % multiple:
        raise LmatlasError(f"max_length={max_length} is not a multiple of pad_to_multiple_of={multiple}")
    return pad, trunc, max_length


def _option(table: dict, value: Any, name: str):
    try:
        return table[value]
    except (KeyError, TypeError):
        choices = ", ".join(repr(k) for k in table)
        raise LmatlasError(f"{name}={value!r} is not one of {choices}") from None
