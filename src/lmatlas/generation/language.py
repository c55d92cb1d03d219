"""An encoder-decoder's target language, as ``generate()`` arguments.

mBART-50 and mBART (cc25) mark each text with a language code (mBART-50 before the text, mBART
after its ``</s>``); the tokenizer puts the source's code there. The target's code is the
output's first token after the decoder start token: for both families transformers forces it
with ``forced_bos_token_id`` (both tokenizers' ``_build_translation_inputs``, which its
translation pipeline calls), so the translation pipelines and ``lmatlas generate`` both take
their arguments from ``target_language`` and give transformers' tokens. (Giving the code as
``decoder_start_token_id`` instead, as some mBART examples do, is still a plain ``generate()``
argument.)
"""

from __future__ import annotations

from ..errors import LmatlasError


def language_code(tokenizer, code: str, name: str) -> str:
    """``code`` if it is one of the tokenizer's language codes, else the one code it begins
    (``en`` -> ``en_XX``); ``name`` is the argument that gave it, for the error."""
    codes = tokenizer.lang_code_to_id
    if code in codes:
        return code
    matches = [c for c in codes if c.split("_")[0] == code]
    if len(matches) == 1:
        return matches[0]
    # (transformers looks the name up as a token, and takes the unknown token for it)
    raise LmatlasError(f"{name} {code!r} is not one of the model's language codes: {', '.join(codes)}")


def target_language(tokenizer, code: str, name: str = "tgt_lang") -> dict[str, int]:
    """The ``generate()`` arguments that make the output the language ``code``."""
    if tokenizer.language_layout is None:
        raise LmatlasError(f"{name} is for models with language codes (mBART); this tokenizer has none")
    return {"forced_bos_token_id": tokenizer.lang_code_to_id[language_code(tokenizer, code, name)]}
