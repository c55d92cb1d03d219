"""GGUF tokenizers of kind llama (SentencePiece BPE: tokens, scores and token types, no merges),
as llama.cpp's converter writes a Llama 2 or TinyLlama tokenizer: a SentencePiece model trained
here on Shakespeare, its pieces written with ``gguf.GGUFWriter``, read by lmatlas and by
transformers on real text."""

from __future__ import annotations

import io

import pytest

import lmatlas
from lmatlas import LmatlasError

from .helpers_tokenizer import HAND_CASES, sst2_sentences
from .paths import data_file
from .reference import require, transformers
from .test_gguf_written import finish

# llama.cpp's token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@pytest.fixture(scope="module")
def pieces():
    """(piece, score, llama.cpp type) of a small SentencePiece BPE model with byte fallback."""
    spm = require("sentencepiece")
    lines = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines()[:3000]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in lines if line.strip()]), model_writer=model, vocab_size=700,
        model_type="bpe", byte_fallback=True, control_symbols=["<|im_start|>", "<|im_end|>"],
        user_defined_symbols=[], minloglevel=2,
    )  # fmt: skip
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    out = []
    for i in range(sp.get_piece_size()):
        kind = (UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else BYTE if sp.is_byte(i)
                else UNUSED if sp.is_unused(i) else NORMAL)  # fmt: skip
        out.append((sp.id_to_piece(i), sp.get_score(i), kind))
    return out


def write(path, pieces, template=None, **flags):
    gguf = require("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([p for p, _, _ in pieces])
    writer.add_token_scores([s for _, s, _ in pieces if s is not None])
    writer.add_token_types([t for _, _, t in pieces])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    for key, value in flags.items():
        writer.add_bool(f"tokenizer.ggml.{key}", value)
    if template:
        writer.add_chat_template(template)
    finish(writer)
    return path


@pytest.fixture(scope="module")
def written(pieces, tmp_path_factory):
    return write(tmp_path_factory.mktemp("spm") / "spm.gguf", pieces, add_bos_token=True, add_eos_token=False)


def texts() -> list[str]:
    shakespeare = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines()[5000:5150]
    return shakespeare + sst2_sentences(150) + HAND_CASES + ["<|im_start|>user\nhi<|im_end|>", "<s> and </s>"]


def test_ids_as_transformers(written):
    ours = lmatlas.load_tokenizer(written)
    ref = transformers().AutoTokenizer.from_pretrained(written.parent, gguf_file=written.name)
    batch = texts()
    got, want = ours(batch)["input_ids"], ref(batch)["input_ids"]
    assert got == want
    assert all(ids[0] == 1 for ids in got)  # bos first
    assert any(3 <= i < 3 + 256 for ids in got for i in ids)  # some text fell back to bytes
    for ids in got[:40] + got[-len(HAND_CASES) - 2 :]:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    assert ours.bos_token == "<s>" and ours.eos_token == "</s>" and ours.unk_token == "<unk>"


def test_merges_from_scores_match_a_merge_list(pieces, written, tmp_path):
    """A file that lists merges reads them as they are: written out from the scores, the same ids."""
    from lmatlas.gguf.tokenizer import merges_from_scores

    merges = merges_from_scores([p for p, _, _ in pieces], [s for _, s, _ in pieces])
    gguf = require("gguf")
    path = tmp_path / "merges.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([p for p, _, _ in pieces])
    writer.add_token_types([t for _, _, t in pieces])
    writer.add_token_merges([f"{a} {b}" for a, b in merges])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    finish(writer)
    batch = texts()[:100]
    assert lmatlas.load_tokenizer(path)(batch)["input_ids"] == lmatlas.load_tokenizer(written)(batch)["input_ids"]


def test_no_space_prefix_and_eos(pieces, tmp_path):
    """``add_space_prefix`` false (no "▁" before the text) and ``add_eos_token`` true, as llama.cpp
    reads them."""
    path = write(tmp_path / "flags.gguf", pieces, add_space_prefix=False, add_eos_token=True)
    tokenizer = lmatlas.load_tokenizer(path)
    ids = tokenizer("Romeo and Juliet")["input_ids"]
    assert ids[0] == 1 and ids[-1] == 2
    assert not tokenizer.convert_ids_to_tokens(ids)[1].startswith("▁")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Romeo and Juliet"


def test_scores_missing(pieces, tmp_path):
    gguf = require("gguf")
    path = tmp_path / "noscores.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([p for p, _, _ in pieces])
    finish(writer)
    sentence = r"noscores\.gguf: its metadata has no tokenizer\.ggml\.scores, which a SentencePiece tokenizer"
    with pytest.raises(LmatlasError, match=sentence):
        lmatlas.load_tokenizer(path)


def test_unknown_tokenizer_kind(pieces, tmp_path):
    gguf = require("gguf")
    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("bert")
    writer.add_token_list(["a"])
    finish(writer)
    with pytest.raises(LmatlasError, match=r"bert\.gguf: tokenizer\.ggml\.model is 'bert'; lmatlas reads GGUF tokenizers"):
        lmatlas.load_tokenizer(path)


def test_scores_not_one_per_token(pieces, tmp_path):
    path = write(tmp_path / "short.gguf", pieces[:-1] + [(pieces[-1][0], None, NORMAL)])
    with pytest.raises(LmatlasError, match=r"short\.gguf: tokenizer\.ggml\.scores holds 699 scores for 700 tokens"):
        lmatlas.load_tokenizer(path)
