"""Helpers for the presets' ``to_hf(cfg)``: a ModelConfig written back as ``config.json`` fields.

``to_hf`` is the inverse of a preset's ``config``: ``config(to_hf(cfg), head)`` gives ``cfg``
back. It is how a model built from scratch (an architecture preset at any size) is saved in the
Hugging Face format; a switch the family's config.json cannot express is an error, not a
silent change of model.
"""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from ..errors import LmatlasError


def common(cfg: ModelConfig) -> dict[str, Any]:
    """The fields every family stores alike (see ``_maps.hf_common``)."""
    out: dict[str, Any] = {
        "vocab_size": cfg.vocab_size,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "tie_word_embeddings": cfg.tie_word_embeddings,
    }
    return out


def require(cfg: ModelConfig, family: str, **expected: Any) -> None:
    """Refuse a config whose switches differ from what ``family``'s config.json can store."""
    for name, value in expected.items():
        actual = getattr(cfg, name)
        if actual != value:
            raise LmatlasError(
                f"a {family} config.json cannot express {name}={actual!r} (it must be {value!r}); "
                "choose an architecture of another family"
            )


# Switches that only a few families' config.json can express: every other family requires them
# off. A family's ``to_hf`` allows its own by naming them in ``require_usual``.
RARE_SWITCHES: dict[str, Any] = dict(
    is_encoder_decoder=False,
    cross_attention=False,
    embedding_projection=False,
    output_projection=False,
    embedding_scale=1.0,
    positions_from_padding=False,
    positions_from_mask=False,
    type_vocab_size=0,
    task_type_vocab_size=0,
    residual_from_norm=False,
    attention_scale_by_inverse_layer=False,
    cross_layer_sharing=False,
    num_layer_groups=1,
    inner_group_size=1,
    final_norm_eps=None,
    lm_head_scale=1.0,
)


def require_usual(cfg: ModelConfig, family: str, **expected: Any) -> None:
    """``require`` the family's switches, and every rare switch it does not name off."""
    require(cfg, family, **(RARE_SWITCHES | expected))


def plain_heads(cfg: ModelConfig, family: str) -> None:
    """Families whose heads all have the full width (no grouped key/value heads)."""
    require(cfg, family, num_kv_heads=cfg.num_heads)
    if cfg.head_dim * cfg.num_heads != cfg.hidden_size:
        raise LmatlasError(f"a {family} config.json cannot express head_dim {cfg.head_dim} with "
                           f"{cfg.num_heads} heads of hidden size {cfg.hidden_size}")
