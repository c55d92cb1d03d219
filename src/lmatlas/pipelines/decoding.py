"""What the pipelines that generate share (text-generation, and the encoder-decoders'
summarization, translation and text2text-generation): ``generate()``'s arguments as task options,
and the settings a call generates with.

The settings follow ``generation.settings``' one rule, with the pipeline's own defaults (e.g. 256
new tokens) as its base, as transformers' pipelines do; then come the task's entry in
config.json's ``task_specific_params`` and the call's arguments.
"""

from __future__ import annotations

from typing import Any

from ..generation.settings import GLOBAL, resolve
from .base import Option, boolean, string

GENERATE_ARGS = sorted(set(GLOBAL) | {"seed"})


def any_value(name: str, value: Any) -> Any:
    return value  # generate() checks its own arguments, with its own messages


def optional_bool(name: str, value: Any) -> bool | None:
    return None if value is None else boolean(name, value)


def optional_string(name: str, value: Any) -> str | None:
    return None if value is None else string(name, value)


def generate_options() -> dict[str, Option]:
    """One option per ``generate()`` argument (``max_new_tokens``, ``num_beams``, ``seed``, ...)."""
    return {
        name: Option(None, any_value, "generate() argument", "bool" if name in ("do_sample", "use_cache") else "json")
        for name in GENERATE_ARGS
    }


def model_defaults(model, tokenizer, pipeline_defaults: dict[str, Any]) -> dict[str, Any]:
    """Every generate() setting before the task's and the call's: the one rule of
    ``generation.settings`` with the pipeline's defaults as its base, then transformers'
    pipelines' own two touches."""
    settings = resolve(model, base=pipeline_defaults)
    # A model whose generation settings give a max_length keeps it instead of the pipeline's
    # default number of new tokens.
    default_new = pipeline_defaults.get("max_new_tokens")
    own_length = settings["max_length"] is not None and settings["max_length"] != GLOBAL["max_length"]
    if default_new is not None and settings["max_new_tokens"] == default_new and own_length:
        settings["max_new_tokens"] = None
    if settings["pad_token_id"] is None and tokenizer.pad_token_id is not None:
        settings["pad_token_id"] = tokenizer.pad_token_id
    return settings


def task_params(model, task: str) -> tuple[dict[str, Any], str | None]:
    """The generate() settings of ``task_specific_params[task]`` in config.json, and the prefix
    the task puts before each input (the entry's, else config.json's own ``prefix``)."""
    hf = model.config.hf_config or {}
    params = dict((hf.get("task_specific_params") or {}).get(task) or {})
    prefix = params.pop("prefix") if "prefix" in params else hf.get("prefix")
    return {k: v for k, v in params.items() if k in GLOBAL}, prefix


def task_names(model) -> list[str]:
    """The tasks config.json's ``task_specific_params`` has entries for, in its order."""
    return list(((model.config.hf_config or {}).get("task_specific_params") or {}))


def call_settings(defaults: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` with the call's generate() arguments on top."""
    gen = dict(defaults)
    given = {k: opts[k] for k in GENERATE_ARGS if opts.get(k) is not None}
    if "max_length" in given and "max_new_tokens" not in given:
        # A length asked for replaces the pipeline's default number of new tokens (transformers
        # keeps them and warns that max_length is ignored).
        gen["max_new_tokens"] = None
    gen.update(given)
    return gen
