"""Loading a tokenizer from a checkpoint folder: which files it has, which family's row its
configs pick, the backend built from them, its special tokens and settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as RustTokenizer

from ..chat import read_chat_template
from ..checkpoint import resolve
from ..errors import LmatlasError
from ..files import read_json
from .backends import build_bytelevel, build_marian, build_spm, build_wordpiece
from .core import Tokenizer
from .families import Family, family_for
from .languages import Languages
from .padding import check_side
from .special_tokens import SPECIAL_ATTRS, SpecialIds, add_special_tokens, token_content


def _read_configs(folder: Path) -> tuple[dict, dict]:
    """tokenizer_config.json with special_tokens_map.json folded in, and config.json."""
    cfg = {}
    if (folder / "tokenizer_config.json").is_file():
        cfg = read_json(folder / "tokenizer_config.json")
    # HF lets special_tokens_map.json override the config, unless the config lists its added
    # tokens itself (then the map is ignored).
    if (folder / "special_tokens_map.json").is_file() and "added_tokens_decoder" not in cfg:
        extra = read_json(folder / "special_tokens_map.json")
        # The named special tokens replace the config's; additional_special_tokens add up.
        own = list(cfg.get("additional_special_tokens") or [])
        cfg = {**cfg, **extra}
        if own:
            more = extra.get("additional_special_tokens") or []
            cfg["additional_special_tokens"] = own + [t for t in more if t not in own]
    model_cfg = {}
    if (folder / "config.json").is_file():
        model_cfg = read_json(folder / "config.json")
    return cfg, model_cfg


def _apply_class_options(data: dict, family: Family, cfg: dict) -> None:
    """Edit a tokenizer.json the way HF's tokenizer classes do when they load one."""
    data["truncation"] = data["padding"] = None  # HF decides these per call, never from the file
    norm = data.get("normalizer") or {}
    if family.bert_options:
        wanted = {
            "lowercase": cfg.get("do_lower_case", True),
            "strip_accents": cfg.get("strip_accents"),
            "handle_chinese_chars": cfg.get("tokenize_chinese_chars", True),
        }
        if any(key in norm and norm[key] != value for key, value in wanted.items()):
            norm.update(wanted)
    post = data.get("post_processor") or {}
    if family.roberta_options:
        for key, default in (("add_prefix_space", False), ("trim_offsets", True)):
            if key in post:
                post[key] = cfg.get(key, default)
    pre = data.get("pre_tokenizer") or {}
    if "add_prefix_space" in pre:
        pre["add_prefix_space"] = cfg.get("add_prefix_space", False)


# The files a tokenizer can be loaded from, in order of preference, and the kind of each.
_SOURCES = (
    ("tokenizer.json", "json"),
    ("source.spm", "marian"),
    ("vocab.txt", "wordpiece"),
    ("vocab.json", "bytelevel"),
    ("spiece.model", "spm"),
    ("sentencepiece.bpe.model", "spm"),
)
_KIND_FILES = {
    "wordpiece": "vocab.txt", "bytelevel": "vocab.json + merges.txt", "spm": "a SentencePiece .model",
    "marian": "source.spm + target.spm + vocab.json",
}  # fmt: skip


def _build_backend(kind: str, path: Path, family: Family, cfg: dict, specials: dict):
    """``(backend, segmenter, target)`` from the file ``path`` of the given kind; the segmenter
    and the target's ``(backend, segmenter)`` are Marian's, None for the others."""
    if kind == "json":
        data = read_json(path)
        if "model" not in data:
            raise LmatlasError(f"{path} is not a tokenizers JSON file (it has no model)")
        _apply_class_options(data, family, cfg)
        try:
            return RustTokenizer.from_str(json.dumps(data)), None, None
        except Exception as e:  # the Rust parser raises a bare Exception
            raise LmatlasError(f"cannot parse {path}: {e}") from e
    if kind == "wordpiece":
        return build_wordpiece(path, cfg, specials), None, None
    if kind == "bytelevel":
        return build_bytelevel(path, path.parent / "merges.txt", cfg), None, None
    if kind == "marian":
        backend, segmenter = build_marian(path.parent, cfg, specials)
        return backend, segmenter, build_marian(path.parent, cfg, specials, target=True)
    return build_spm(path, family, cfg), None, None


def load_tokenizer(folder: str | os.PathLike, gguf_file: str | None = None) -> Tokenizer:
    """Load the tokenizer of a checkpoint folder or hub id, or of a GGUF file (or a folder
    holding one; see the package docstring). ``gguf_file``: the GGUF file to take from a folder
    or a hub id, as transformers' argument."""
    from ..checkpoint import resolve_file
    from ..gguf import find_gguf, read_tokenizer

    if gguf_file is not None:
        folder = resolve_file(folder, gguf_file)
    gguf_file = find_gguf(folder)
    if gguf_file is not None:
        return read_tokenizer(gguf_file)
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise LmatlasError(f"tokenizer folder {folder} is not a folder")
    folder = resolve(folder, weights=False)
    source = next((name for name, _ in _SOURCES if (folder / name).is_file()), None)
    if source is None:
        if (folder / "vocab.pkl").is_file():  # transformers' TransfoXLTokenizer
            raise LmatlasError(f"{folder}: vocab.pkl is a pickled Python object, which lmatlas does not load; "
                               "give the folder a tokenizer.json (a word-level one fits Transformer-XL)")
        names = ", ".join(name for name, _ in _SOURCES)
        raise LmatlasError(f"{folder} has no tokenizer files (looked for {names})")
    kind = dict(_SOURCES)[source]
    cfg, model_cfg = _read_configs(folder)
    tokenizer_class = cfg.get("tokenizer_class") or model_cfg.get("tokenizer_class")
    family_name, family = family_for(tokenizer_class, model_cfg.get("model_type"), source)
    if family.extra_specials is not None:
        cfg = {**cfg, "additional_special_tokens": family.extra_specials(cfg)}
    specials = {attr: token_content(cfg.get(attr, family.specials.get(attr))) for attr in SPECIAL_ATTRS}
    if kind != "json" and family.files != kind:
        needs = _KIND_FILES.get(family.files, "a tokenizer.json")
        raise LmatlasError(f"{folder} has {source}, but its config asks for {family_name}, which needs {needs}")
    backend, segmenter, target = _build_backend(kind, folder / source, family, cfg, specials)

    from_files = kind != "json"
    backends = [backend] + ([target[0]] if target else [])
    for b in backends:
        add_special_tokens(b, cfg, family, from_files)
        if from_files and family.template is not None:
            b.post_processor = family.template(cfg, SpecialIds(specials, b, str(folder)))
    languages = None
    if family.languages:
        languages = Languages(family, SpecialIds(specials, backend, str(folder)), cfg)
        backend.post_processor = languages.template(languages.src_lang)

    settings = {**family.settings, **_settings(cfg, folder)}
    common = dict(
        specials=specials,
        additional_special_tokens=[token_content(t) for t in cfg.get("additional_special_tokens") or []],
        model_input_names=settings.get("model_input_names", family.input_names),
        # HF's slow classes of some families clean up decoded text by default; from a
        # tokenizer.json only the config turns it on.
        clean_up_tokenization_spaces=settings.get("clean_up_tokenization_spaces", from_files and family.clean_up),
        **{k: v for k, v in settings.items() if k not in ("model_input_names", "clean_up_tokenization_spaces")},
        name_or_path=str(folder),
    )
    # Marian's targets: the target SentencePiece model (and vocabulary, if separate); its
    # outputs decode with them too.
    target_tokenizer = None if target is None else Tokenizer(target[0], segmenter=target[1], **common)
    tokenizer = Tokenizer(backend, segmenter=segmenter, languages=languages, target=target_tokenizer, **common)
    tokenizer.chat_template = read_chat_template(folder, cfg)
    return tokenizer


def _settings(cfg: dict, folder: Path) -> dict:
    """The Tokenizer settings tokenizer_config.json gives, checked."""
    out: dict[str, Any] = {}
    where = folder / "tokenizer_config.json"
    if cfg.get("model_max_length") is not None:
        if not isinstance(cfg["model_max_length"], (int, float)) or cfg["model_max_length"] < 0:
            raise LmatlasError(f"model_max_length in {where} is not a non-negative number")
        out["model_max_length"] = int(cfg["model_max_length"])
    for key in ("padding_side", "truncation_side"):
        if key in cfg:
            out[key] = check_side(cfg[key], f"{key} in {where}")
    if cfg.get("model_input_names"):
        names = cfg["model_input_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise LmatlasError(f"model_input_names in {where} is not a list of names")
        out["model_input_names"] = names
    if "clean_up_tokenization_spaces" in cfg:
        out["clean_up_tokenization_spaces"] = bool(cfg["clean_up_tokenization_spaces"])
    return out
