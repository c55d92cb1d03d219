"""XLNet's settings (Yang et al., 2019), in the paper's and the checkpoints' own words.

XLNet is no switch on the shared skeletons: its stack (``lmatlas.xlnet``) attends with relative
positions and segments, keeps Transformer-XL's memory of earlier segments, and runs two streams
for permutation language modelling (``lmatlas.two_stream``). What only it reads lives here, as
``ModelConfig.xlnet``; ``None`` there means "not an XLNet".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import LmatlasError

ATTENTION_TYPES = ("bi", "uni")
SUMMARY_TYPES = ("last", "first", "mean", "cls_index")


@dataclass
class XLNetSettings:
    # "bi": every token may read every other one (XLNet); "uni": each reads those before it
    # and the memory (Transformer-XL's causal attention).
    attn_type: str = "bi"
    # Transformer-XL's recurrence: the hidden states entering each layer are kept as memory for
    # the next segment, at most ``mem_len`` of them (None or 0: all); ``reuse_len``: only the
    # segment's first tokens go into memory. Memory is kept in evaluation and/or in training.
    mem_len: int | None = 512
    reuse_len: int | None = None
    use_mems_eval: bool = True
    use_mems_train: bool = False
    # Relative positions: half the batch reads distances forward and half backward
    # (``bi_data``, a batch of pairs in pretraining), distances beyond ``clamp_len`` are read as
    # ``clamp_len`` (-1: never), and with ``same_length`` every query of causal attention
    # reads as many keys.
    bi_data: bool = False
    clamp_len: int = -1
    same_length: bool = False
    # The sequence summary of the classification and multiple-choice heads: which state it
    # reads, whether a dense layer (width: the labels when ``summary_proj_to_labels``) and an
    # activation follow, and the dropouts around them.
    summary_type: str = "last"
    summary_use_proj: bool = True
    summary_proj_to_labels: bool = False
    summary_activation: str | None = "tanh"
    summary_first_dropout: float = 0.0
    summary_last_dropout: float = 0.1
    # The beam of the question-answering head: the best starts, and the best ends of each.
    start_n_top: int = 5
    end_n_top: int = 5

    def __post_init__(self) -> None:
        if self.attn_type not in ATTENTION_TYPES:
            raise LmatlasError(f"attn_type must be one of {', '.join(ATTENTION_TYPES)}, not {self.attn_type!r}")
        if self.summary_type not in SUMMARY_TYPES:
            raise LmatlasError(
                f"summary_type must be one of {', '.join(SUMMARY_TYPES)}, not {self.summary_type!r}"
                + (" (transformers has no attention summary either)" if self.summary_type == "attn" else "")
            )
        for name in ("mem_len", "reuse_len"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                raise LmatlasError(f"{name} must be a whole number >= 0 or null, not {value!r}")
        for name in ("start_n_top", "end_n_top"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise LmatlasError(f"{name} must be a whole number >= 1, not {value!r}")

    @property
    def causal(self) -> bool:
        return self.attn_type == "uni"

    def replace(self, **changes: Any) -> "XLNetSettings":
        return dataclasses.replace(self, **changes)


def settings(value: "XLNetSettings | dict | None") -> "XLNetSettings | None":
    """``ModelConfig.xlnet`` from what it was given: settings, a dict of them (an architecture
    preset's TOML table), or None."""
    if value is None or isinstance(value, XLNetSettings):
        return value
    if not isinstance(value, dict):
        raise LmatlasError(f"xlnet must be a table of XLNet settings, not {value!r}")
    known = {f.name for f in dataclasses.fields(XLNetSettings)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise LmatlasError(f"xlnet settings have no field {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return XLNetSettings(**value)


__all__ = ["ATTENTION_TYPES", "SUMMARY_TYPES", "XLNetSettings", "settings"]
