"""Reading a SentencePiece ``.model`` file: the protobuf wire format, decoded by hand for the
few fields lmatlas needs (so that neither ``protobuf`` nor ``sentencepiece`` is needed to load one)."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import LmatlasError

# Token types of SentencePiece pieces (sentencepiece_model.proto, SentencePiece.Type).
SPM_NORMAL, SPM_UNKNOWN, SPM_CONTROL, SPM_USER_DEFINED = 1, 2, 3, 4
# Kinds of model (TrainerSpec.ModelType); word and char models have no ``tokenizers`` counterpart.
SPM_UNIGRAM, SPM_BPE = 1, 2


@dataclass(frozen=True)
class SpmModel:
    """What lmatlas needs from a SentencePiece ``.model`` file."""

    pieces: list[tuple[str, float, int]]  # (piece, score, type), in id order
    model_type: int  # 1 unigram, 2 BPE, 3 word, 4 char
    unk_id: int
    unk_piece: str
    precompiled_charsmap: bytes
    add_dummy_prefix: bool
    remove_extra_whitespaces: bool


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _proto_fields(buf: bytes):
    """Yield ``(field_number, value)`` for each field of a serialized protobuf message.

    Protobuf's wire format is a flat run of (key, value) pairs: the key is a varint holding
    ``field_number << 3 | wire_type``; wire type 0 is a varint, 1 eight bytes, 2 a varint length
    followed by that many bytes (strings, bytes and nested messages), 5 four bytes. Values come
    back raw (int, or bytes for types 1, 2 and 5); callers know what each field means.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:  # 3 and 4 are the long-deprecated groups; nothing in a .model uses them
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("message ends in the middle of a field")
        yield number, value


def _int32(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value  # negative int32s are 10-byte varints


def read_sentencepiece_model(path: str | os.PathLike) -> SpmModel:
    """Read the fields lmatlas needs from a SentencePiece ``.model`` (a serialized ModelProto).

    ModelProto: 1 pieces (repeated SentencePiece: 1 piece, 2 score (float), 3 type), 2 trainer_spec
    (3 model_type, 40 unk_id, 45 unk_piece), 3 normalizer_spec (2 precompiled_charsmap,
    3 add_dummy_prefix, 4 remove_extra_whitespaces). Absent fields take the .proto defaults.
    """
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise LmatlasError(f"{path}: cannot be read ({e.strerror or e})") from None
    pieces: list[tuple[str, float, int]] = []
    trainer = {3: 1, 40: 0, 45: b"<unk>"}
    norm = {2: b"", 3: 1, 4: 1}
    try:
        for number, value in _proto_fields(buf):
            if number == 1:
                piece = {1: b"", 2: b"\0\0\0\0", 3: SPM_NORMAL}
                piece.update(_proto_fields(value))
                pieces.append((piece[1].decode("utf-8"), struct.unpack("<f", piece[2])[0], piece[3]))
            elif number == 2:
                trainer.update((n, v) for n, v in _proto_fields(value) if n in trainer)
            elif number == 3:
                norm.update((n, v) for n, v in _proto_fields(value) if n in norm)
        model = SpmModel(
            pieces=pieces,
            model_type=trainer[3],
            unk_id=_int32(trainer[40]),
            unk_piece=trainer[45].decode("utf-8"),
            precompiled_charsmap=bytes(norm[2]),
            add_dummy_prefix=bool(norm[3]),
            remove_extra_whitespaces=bool(norm[4]),
        )
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, struct.error) as e:
        # Any of these means a field holds the wrong kind of value: the file is not a ModelProto.
        raise LmatlasError(f"{path} is not a valid SentencePiece model: {e}") from e
    if not pieces:
        raise LmatlasError(f"{path} is not a valid SentencePiece model: it has no pieces")
    return model
