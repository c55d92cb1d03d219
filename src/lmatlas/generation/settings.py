"""generate()'s settings, and the one rule that decides them.

Every way of generating — ``generate()`` and ``stream()``, the generating pipelines, ``lmatlas
generate`` — resolves its settings with ``resolve`` below, in transformers' order of precedence
(``GenerationMixin._prepare_generation_config``, 4.57), lowest first:

1. the global defaults: ``GenerationSettings``' (transformers' ``GenerationConfig()``);
2. the caller's own defaults, the *base*: ``generate(generation_config=...)``, as transformers'
   argument of that name (``lmatlas generate`` gives a decoder 50 new tokens this way), or a
   pipeline's (text-generation samples 256 new tokens at temperature 0.7; summarization,
   translation and text2text-generation take 4 beams and 256 new tokens); none by default;
3. the model's own settings — its generation_config.json, else the generation settings its
   config.json holds (older checkpoints), with the token ids config.json names — wherever the base
   leaves a setting at its global default (transformers' ``use_model_defaults``). With no base
   that is every setting the model gives, as ``generate()`` takes the model's generation config;
   with a base, a temperature of 0 then means greedy decoding;
4. the call's arguments. ``None`` means "the default", except for the settings that ``None``
   switches off (``eos_token_id=None``, ``forced_eos_token_id=None``, ``top_k=None``, ...).

What a pipeline adds after step 3 (its task's ``task_specific_params``, the tokenizer's pad token,
its length rules) is the pipeline's own, in ``pipelines.decoding``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

from ..errors import LmatlasError


@dataclass
class GenerationSettings:
    """The arguments of ``generate()``; the defaults are transformers' ``GenerationConfig()``."""

    max_length: int = 20
    max_new_tokens: int | None = None
    min_length: int = 0
    min_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    stop_strings: str | list[str] | None = None
    use_cache: bool = True
    # Encoder-decoders: the token the decoder starts from, and tokens forced first (mBART's
    # target language) and last (at max_length).
    decoder_start_token_id: int | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | list[int] | None = None
    # Token sequences never to complete (Marian's checkpoints forbid their pad token).
    bad_words_ids: list[list[int]] | None = None

    @classmethod
    def resolve(cls, model, kwargs: dict[str, Any], base=None) -> "GenerationSettings":
        """The settings of a ``generate()`` call with ``kwargs`` over ``base`` (its
        ``generation_config=``: a dict or ``GenerationSettings``)."""
        if isinstance(base, GenerationSettings):
            base = vars(base)
        if base is not None and not isinstance(base, dict):
            raise LmatlasError(f"generation_config must be a dict of settings, not {type(base).__name__}")
        for name, given in (("generate()", kwargs), ("generation_config", base or {})):
            unknown = sorted(set(given) - set(GLOBAL))
            if unknown:
                raise LmatlasError(f"{name} got unknown argument(s) {', '.join(unknown)}")
        return cls(**resolve(model, kwargs, base))


GLOBAL: dict[str, Any] = {f.name: f.default for f in fields(GenerationSettings)}

# As in transformers, an explicit None switches these off (e.g. forced_eos_token_id=None); for the
# other settings None means "the default".
NONE_SWITCHES_OFF = frozenset({
    "eos_token_id", "forced_bos_token_id", "forced_eos_token_id", "bad_words_ids", "max_new_tokens",
    "min_new_tokens", "stop_strings", "top_k",
})  # fmt: skip

_TOKENS = ("eos_token_id", "pad_token_id", "bos_token_id")


def model_settings(model) -> dict[str, Any]:
    """The generation settings the model's files give (step 3 of the rule)."""
    cfg = model.config
    # Without a generation_config.json, transformers derives the generation settings from
    # config.json (decoder_start_token_id, forced_eos_token_id, num_beams, ...).
    saved = cfg.generation or (cfg.hf_config or {})
    own: dict[str, Any] = {key: getattr(cfg, key, None) for key in _TOKENS}
    for key, value in saved.items():
        # A token id the file leaves empty keeps config.json's.
        if key in GLOBAL and not (value is None and key in _TOKENS):
            own[key] = value
    return own


def resolve(model, call: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every generate() setting, by the rule of this module's docstring: the global defaults,
    ``base``, the model's own settings where ``base`` keeps the global default, then ``call``."""
    values = {**GLOBAL, **(base or {})}
    for key, value in model_settings(model).items():
        if values[key] == GLOBAL[key] and value != GLOBAL[key]:
            values[key] = value
    if base and values["temperature"] == 0.0:
        values["do_sample"] = False
    values.update({k: v for k, v in (call or {}).items() if v is not None or k in NONE_SWITCHES_OFF})
    return values


def eos_list(eos: int | Sequence[int] | None) -> list[int]:
    if eos is None:
        return []
    if isinstance(eos, int):
        return [eos]
    return [int(e) for e in eos]


def check(s: GenerationSettings, prompt_length: int, usable_positions: int | None, vocab_size: int,
          sliding: bool = False) -> None:
    """One clear sentence for each argument that cannot work (transformers mostly warns).
    ``sliding``: the context slides past the model's positions, which then bound the prompt only."""
    if s.max_new_tokens is not None and s.max_new_tokens < 0:
        raise LmatlasError(f"max_new_tokens must be >= 0, not {s.max_new_tokens}")
    if s.do_sample:
        if not isinstance(s.temperature, (int, float)) or s.temperature <= 0:
            raise LmatlasError(f"temperature must be > 0 when sampling, not {s.temperature}")
        if not 0 < s.top_p <= 1:
            raise LmatlasError(f"top_p must be in (0, 1], not {s.top_p}")
        if s.top_k is not None and (not isinstance(s.top_k, int) or s.top_k < 0):
            raise LmatlasError(f"top_k must be a whole number >= 0, not {s.top_k}")
    if s.repetition_penalty <= 0:
        raise LmatlasError(f"repetition_penalty must be > 0, not {s.repetition_penalty}")
    if not isinstance(s.num_beams, int) or s.num_beams < 1:
        raise LmatlasError(f"num_beams must be a whole number >= 1, not {s.num_beams}")
    if s.num_return_sequences < 1:
        raise LmatlasError(f"num_return_sequences must be >= 1, not {s.num_return_sequences}")
    if s.num_beams == 1 and not s.do_sample and s.num_return_sequences != 1:
        raise LmatlasError(
            f"num_return_sequences={s.num_return_sequences} needs sampling (do_sample=True) or beam search "
            "(num_beams >= num_return_sequences); greedy decoding gives one sequence per prompt"
        )
    if s.num_beams > 1 and s.num_return_sequences > s.num_beams:
        raise LmatlasError(
            f"num_return_sequences ({s.num_return_sequences}) cannot exceed num_beams ({s.num_beams})"
        )
    if s.early_stopping not in (True, False, "never"):
        raise LmatlasError(f"early_stopping must be True, False or 'never', not {s.early_stopping!r}")
    for e in eos_list(s.eos_token_id):
        if not 0 <= e < vocab_size:
            raise LmatlasError(f"eos_token_id {e} is outside the vocabulary (0..{vocab_size - 1})")
    for name in ("forced_bos_token_id", "forced_eos_token_id", "decoder_start_token_id"):
        for e in eos_list(getattr(s, name)):
            if not 0 <= e < vocab_size:
                raise LmatlasError(f"{name} {e} is outside the vocabulary (0..{vocab_size - 1})")
    if s.bad_words_ids is not None:
        bad = s.bad_words_ids
        if (
            not isinstance(bad, (list, tuple))
            or not bad
            or any(not isinstance(w, (list, tuple)) or not w for w in bad)
            or any(not isinstance(t, int) or not 0 <= t < vocab_size for w in bad for t in w)
        ):
            raise LmatlasError(
                f"bad_words_ids must be a non-empty list of non-empty lists of token ids (0..{vocab_size - 1}), "
                f"not {bad!r}"
            )
    if usable_positions is not None:
        if prompt_length > usable_positions:
            raise LmatlasError(
                f"the prompt is {prompt_length} tokens long, but the model has only {usable_positions} positions"
            )
        if s.max_length > usable_positions and not sliding:
            new = s.max_length - prompt_length
            raise LmatlasError(
                f"max_new_tokens {new} goes beyond the model's {usable_positions} positions "
                f"(the prompt takes {prompt_length}); ask for at most {usable_positions - prompt_length}, "
                "or slide the context (sliding_window=True)"
            )
