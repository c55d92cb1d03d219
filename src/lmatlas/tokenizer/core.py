"""The Tokenizer: a Hugging Face fast tokenizer's interface (``__call__``, ``encode``,
``decode``, special tokens, padding and truncation settings) over a loaded ``tokenizers`` backend."""

from __future__ import annotations

from typing import Any, Sequence

from tokenizers import Tokenizer as RustTokenizer

from ..errors import LmatlasError
from .backends import PieceSegmenter
from .encoding import BatchEncoding
from .languages import Languages
from .padding import VERY_LARGE_INTEGER, check_side, resolve_lengths
from .special_tokens import SPECIAL_ATTRS

# The word-joining artefacts HF removes from decoded text when clean_up_tokenization_spaces is on,
# applied in this order.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip


def _special_token(attr: str) -> tuple[property, property]:
    """The ``x_token`` (settable) and ``x_token_id`` properties of one special token."""

    def get_id(self) -> int | None:
        token = self._specials[attr]
        return None if token is None else self.convert_tokens_to_ids(token)

    def set_token(self, value: str | None) -> None:
        # Like HF: naming a token (e.g. pad_token = eos_token for GPT-2) does not add it to the
        # vocabulary; its id is whatever the vocabulary says.
        if value is not None and not isinstance(value, str):
            raise LmatlasError(f"{attr} must be a string or None, not {type(value).__name__}")
        self._specials[attr] = value

    return property(lambda self: self._specials[attr], set_token), property(get_id)


def _side(name: str) -> property:
    """A ``padding_side`` / ``truncation_side`` property that refuses anything but a side."""
    private = "_" + name

    def set_side(self, value: str) -> None:
        setattr(self, private, check_side(value, name))

    return property(lambda self: getattr(self, private), set_side)


def _language(name: str) -> property:
    """mBART's ``src_lang`` (the language of the texts) or ``tgt_lang`` (of the targets)."""

    def set_code(self, code: str) -> None:
        if self._languages is None:
            raise LmatlasError(f"this tokenizer has no language codes ({name} is for mBART)")
        setattr(self._languages, name, self._languages.check(code, name))
        if name == "src_lang":  # the texts' template names their language
            self._backend.post_processor = self._languages.template(code)

    return property(lambda self: getattr(self._languages, name, None), set_code)


class Tokenizer:
    """A loaded tokenizer with the interface of a Hugging Face fast tokenizer.

    Build one with ``load_tokenizer``. The ``tokenizers`` pipeline is ``backend_tokenizer``;
    truncation and padding are set on it for each call only.
    """

    def __init__(
        self,
        backend: RustTokenizer,
        *,
        specials: dict[str, str | None],
        additional_special_tokens: Sequence[str] = (),
        model_input_names: Sequence[str] = ("input_ids", "attention_mask"),
        model_max_length: int = VERY_LARGE_INTEGER,
        padding_side: str = "right",
        truncation_side: str = "right",
        clean_up_tokenization_spaces: bool = False,
        pad_token_type_id: int = 0,
        name_or_path: str = "",
        segmenter: PieceSegmenter | None = None,
        languages: Languages | None = None,
        target: Tokenizer | None = None,
    ):
        self._backend = backend
        # Marian: texts are cut into pieces by sentencepiece first; ``_target`` encodes targets
        # (``text_target``) and decodes model outputs (the target tokenizer is its own target).
        self._segmenter = segmenter
        self._target = target if target is not None or segmenter is None else self
        self._languages = languages
        self._specials = {attr: specials.get(attr) for attr in SPECIAL_ATTRS}
        self.additional_special_tokens = list(additional_special_tokens)
        self.model_input_names = list(model_input_names)
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.pad_token_type_id = pad_token_type_id  # XLNet pads token types with 3
        self.name_or_path = name_or_path
        # The Jinja template chats are formatted with (several, by name, as a dict), as HF's
        # attribute: load_tokenizer reads the folder's, and it may be set by hand.
        self.chat_template: str | dict[str, str] | None = None

    # -- settings ---------------------------------------------------------------------------

    padding_side = _side("padding_side")
    truncation_side = _side("truncation_side")

    @property
    def backend_tokenizer(self) -> RustTokenizer:
        return self._backend

    # -- languages (mBART) -------------------------------------------------------------------

    src_lang = _language("src_lang")
    tgt_lang = _language("tgt_lang")

    @property
    def language_layout(self) -> str | None:
        """Where the language code goes: "prefix" (mBART-50: before the text; a translation
        starts with the target code, forced as its first token), "suffix" (mBART: after </s>;
        a translation's decoder starts from the target code), or None (no language codes)."""
        return self._languages.layout if self._languages else None

    @property
    def lang_code_to_id(self) -> dict[str, int]:
        """mBART's language codes and their ids (for ``forced_bos_token_id``)."""
        if self._languages is None:
            return {}
        return {code: self._backend.token_to_id(code) for code in self._languages.codes}

    # -- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, added tokens included (HF's ``len(tokenizer)``)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        """Ids of tokens; a token outside the vocabulary gives the unk id (None without one)."""
        if isinstance(tokens, str):
            token_id = self._backend.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False):
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(int(i)) for i in ids if int(i) not in skip]

    # -- special tokens ---------------------------------------------------------------------

    bos_token, bos_token_id = _special_token("bos_token")
    eos_token, eos_token_id = _special_token("eos_token")
    unk_token, unk_token_id = _special_token("unk_token")
    sep_token, sep_token_id = _special_token("sep_token")
    pad_token, pad_token_id = _special_token("pad_token")
    cls_token, cls_token_id = _special_token("cls_token")
    mask_token, mask_token_id = _special_token("mask_token")

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {attr: tok for attr, tok in self._specials.items() if tok}
        if self.additional_special_tokens:
            out["additional_special_tokens"] = list(self.additional_special_tokens)
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [t for t in self._specials.values() if t] + list(self.additional_special_tokens)
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._backend.num_special_tokens_to_add(pair)

    # -- encoding ---------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        text_pair: str | Sequence[str] | None = None,
        *,
        text_target: str | Sequence[str] | None = None,
        **kwargs,
    ) -> BatchEncoding:
        """Encode texts (see ``encode_texts``); ``text_target`` encodes what an encoder-decoder
        should produce, as transformers does: with Marian's target model, with mBART's target
        language; given with ``text``, its ids come back as ``labels``."""
        if text_target is None:
            if text is None:
                raise LmatlasError("text must be a string or a list of strings (or give text_target)")
            return self.encode_texts(text, text_pair, **kwargs)
        target = self._encode_target(text_target, **kwargs)
        if text is None:
            return target
        out = self.encode_texts(text, text_pair, **kwargs)
        out["labels"] = target["input_ids"]
        return out

    def _encode_target(self, text, **kwargs) -> BatchEncoding:
        if self._target is not None:
            return self._target.encode_texts(text, **kwargs)
        if self._languages is not None:
            if self._languages.tgt_lang is None:
                raise LmatlasError("text_target needs the target language: set tokenizer.tgt_lang (e.g. 'ro_RO') first")
            before = self._backend.post_processor
            self._backend.post_processor = self._languages.template(self._languages.tgt_lang)
            try:
                return self.encode_texts(text, **kwargs)
            finally:
                self._backend.post_processor = before
        return self.encode_texts(text, **kwargs)

    def encode_texts(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
    ) -> BatchEncoding:
        """Encode one text (or pair), or a batch of them, as HF fast tokenizers do.

        A single string gives unbatched lists (unless ``return_tensors`` or overflowing tokens
        ask for a batch). ``truncation=None`` (the default) truncates only if ``max_length`` is
        given without padding, as in HF.
        """
        batched = not isinstance(text, str)
        if batched:
            if not isinstance(text, (list, tuple)) or not all(isinstance(t, str) for t in text):
                raise LmatlasError("text must be a string or a list of strings")
            if not text:
                raise LmatlasError("text is an empty list; give at least one string")
            if text_pair is None:
                inputs = list(text)
            else:
                if isinstance(text_pair, str) or len(text_pair) != len(text):
                    raise LmatlasError("text_pair must be a list of strings as long as text")
                if not all(isinstance(t, str) for t in text_pair):
                    raise LmatlasError("text_pair must be a list of strings as long as text")
                inputs = list(zip(text, text_pair))
        else:
            if text_pair is not None and not isinstance(text_pair, str):
                raise LmatlasError("text_pair must be a string when text is a string")
            # An empty pair counts as no pair, as in HF.
            inputs = [(text, text_pair) if text_pair else text]
        if return_tensors not in (None, "pt", "np"):
            raise LmatlasError(f"return_tensors={return_tensors!r} is not one of None, 'pt', 'np'")
        if return_offsets_mapping and self._segmenter is not None:
            raise LmatlasError("return_offsets_mapping is not available for Marian's tokenizer (nor in transformers)")

        encodings = self._encode_batch(
            inputs, add_special_tokens, padding, truncation, max_length, stride, pad_to_multiple_of, padding_side
        )
        rows = [[e, *e.overflowing] if return_overflowing_tokens else [e] for e in encodings]
        flat = [e for row in rows for e in row]
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        data: dict[str, list] = {"input_ids": [e.ids for e in flat]}
        if return_token_type_ids:
            data["token_type_ids"] = [e.type_ids for e in flat]
        if return_attention_mask:
            data["attention_mask"] = [e.attention_mask for e in flat]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [e.special_tokens_mask for e in flat]
        if return_offsets_mapping:
            data["offset_mapping"] = [e.offsets for e in flat]
        if return_length:
            data["length"] = [len(e.ids) for e in flat]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = [i for i, row in enumerate(rows) for _ in row]

        if return_tensors is not None:
            data = {key: _to_tensor(key, value, return_tensors) for key, value in data.items()}
        elif not batched and not return_overflowing_tokens:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, flat)

    def _encode_batch(self, inputs, add_special_tokens, padding, truncation, max_length, stride, multiple, side):
        has_pad = self.pad_token_id is not None
        pad, trunc, max_length = resolve_lengths(
            padding, truncation, max_length, stride, multiple, side, self.model_max_length, has_pad
        )

        # The backend keeps truncation and padding as state: set both on every call so that
        # nothing carries over from one call to the next.
        backend = self._backend
        if trunc:
            backend.enable_truncation(max_length, stride=stride, strategy=trunc, direction=self.truncation_side)
        else:
            backend.no_truncation()
        if pad:
            backend.enable_padding(
                direction=side or self.padding_side,
                pad_id=self.pad_token_id,
                pad_type_id=self.pad_token_type_id,
                pad_token=self.pad_token,
                length=max_length if pad == "max_length" else None,
                pad_to_multiple_of=multiple,
            )
        else:
            backend.no_padding()
        try:
            if self._segmenter is not None:
                pieces = [
                    tuple(self._segmenter(t) for t in x) if isinstance(x, tuple) else self._segmenter(x)
                    for x in inputs
                ]
                return backend.encode_batch(pieces, is_pretokenized=True, add_special_tokens=add_special_tokens)
            return backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        except Exception as e:  # tokenizers reports truncation that cannot fit as a bare Exception
            raise LmatlasError(f"cannot encode the text with these settings: {e}") from e
        except BaseException as e:
            # A Rust panic (e.g. a stride too long for what truncation leaves) surfaces as
            # pyo3's PanicException, which is not an Exception; anything else passes through.
            if type(e).__name__ != "PanicException":
                raise
            raise LmatlasError(f"cannot encode the text with these settings: {str(e).splitlines()[0]}") from None

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        **kwargs,
    ) -> list[int]:
        """The ids of one text (or pair). Further keyword arguments go to ``__call__``."""
        if not isinstance(text, str):
            raise LmatlasError(f"encode takes one string, not {type(text).__name__} (call the tokenizer for batches)")
        kwargs.update(add_special_tokens=add_special_tokens, truncation=truncation, max_length=max_length)
        return self(text, text_pair, **kwargs)["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        return self(text, pair, add_special_tokens=add_special_tokens).tokens()

    # -- decoding ---------------------------------------------------------------------------

    def decode(
        self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Text of one sequence of ids (a list, a 1-d tensor or array, or a single id)."""
        return self.batch_decode([_id_list(ids)], skip_special_tokens, clean_up_tokenization_spaces)[0]

    def batch_decode(
        self, sequences, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        ids = [_id_list(s) for s in sequences]
        if self._segmenter is not None:
            texts = [self._target._decode_pieces(row, skip_special_tokens) for row in ids]
        else:
            texts = self._backend.decode_batch(ids, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            texts = [_clean_up(t) for t in texts]
        return texts

    def _decode_pieces(self, ids: list[int], skip_special_tokens: bool) -> str:
        """Marian: the pieces of ``ids`` joined by the (target) SentencePiece model."""
        tokens = [self._backend.id_to_token(i) for i in ids]
        tokens = [self.unk_token if t is None else t for t in tokens]
        return self._segmenter.decode(tokens, set(self.all_special_tokens), skip_special_tokens)

    def __repr__(self) -> str:
        return f"Tokenizer({self.name_or_path!r}, vocab_size={self.vocab_size})"


def _clean_up(text: str) -> str:
    for old, new in _CLEAN_UP:
        text = text.replace(old, new)
    return text


def _id_list(ids) -> list[int]:
    if hasattr(ids, "tolist"):  # torch tensors and numpy arrays
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    try:
        return [int(i) for i in ids]
    except (TypeError, ValueError):
        raise LmatlasError("ids to decode must be a sequence of integers (use batch_decode for a batch)") from None


def _to_tensor(key: str, value: list, kind: str):
    if value and isinstance(value[0], list) and len({len(row) for row in value}) > 1:
        raise LmatlasError(
            f"the {key} rows have different lengths, so they cannot form a tensor; pass padding=True"
        )
    if kind == "pt":
        import torch

        return torch.tensor(value)
    import numpy as np

    return np.asarray(value)
