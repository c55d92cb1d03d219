"""mBART's language codes: the source language's code goes around each text, the target
language's around each target, and either can be changed between calls."""

from __future__ import annotations

from ..errors import LmatlasError
from .families import Family, language_template
from .special_tokens import SpecialIds


class Languages:
    """The language codes of one tokenizer: ``src_lang`` goes around each text, ``tgt_lang``
    around targets."""

    def __init__(self, family: Family, ids: SpecialIds, cfg: dict):
        self.layout = family.language_layout
        self.ids = ids
        self.codes = family.languages
        self.src_lang = self.check(cfg.get("src_lang") or "en_XX", "src_lang")
        self.tgt_lang = cfg.get("tgt_lang")
        if self.tgt_lang is not None:
            self.check(self.tgt_lang, "tgt_lang")

    def check(self, code: str, name: str) -> str:
        if code not in self.codes and self.ids.find(code) is None:
            raise LmatlasError(f"{name} {code!r} is not one of the language codes: {', '.join(self.codes)}")
        return code

    def template(self, code: str):
        """The post-processor that puts ``code`` around a text."""
        return language_template(self.layout, code, self.ids)
