"""Building a ``tokenizers`` pipeline from a checkpoint's original vocabulary files (WordPiece,
byte-level BPE, SentencePiece, Marian's pair of SentencePiece models), the same pipeline Hugging
Face's slow-to-fast conversion builds."""

from __future__ import annotations

import re
from pathlib import Path

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as RustTokenizer

from ..errors import LmatlasError
from ..files import read_json, read_text
from .families import Family
from .sentencepiece_model import SPM_BPE, SPM_CONTROL, SPM_UNIGRAM, SPM_USER_DEFINED, SpmModel, read_sentencepiece_model
from .special_tokens import token_content


def _bpe_merges_by_score(vocab: dict[str, int], scored: list[tuple[str, float]]) -> list[tuple[str, str]]:
    """Merges for a SentencePiece BPE model, which stores only pieces and scores.

    Every way to split a piece into two known pieces is a merge; higher-scored pieces merge
    first (ties: shorter left part, then shorter right part; within one piece, by the ids of
    the parts). This is the order HF's converter derives.
    """
    merges = []
    for piece, score in dict(scored).items():
        splits = [(piece[:i], piece[i:]) for i in range(1, len(piece))]
        splits = [(left, right) for left, right in splits if left in vocab and right in vocab]
        splits.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges += [(left, right, score) for left, right in splits]
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def build_wordpiece(path: Path, cfg: dict, specials: dict) -> RustTokenizer:
    lines = read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last token; it does not start another
    vocab: dict[str, int] = {}
    for index, line in enumerate(lines):
        vocab[line] = index  # a repeated line keeps its last index, as in HF
    if not vocab:
        raise LmatlasError(f"{path} is empty")
    tok = RustTokenizer(models.WordPiece(vocab, unk_token=str(specials.get("unk_token"))))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=cfg.get("tokenize_chinese_chars", True),
        strip_accents=cfg.get("strip_accents"),
        lowercase=cfg.get("do_lower_case", True),
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def build_bytelevel(vocab_path: Path, merges_path: Path, cfg: dict) -> RustTokenizer:
    if not merges_path.is_file():
        raise LmatlasError(f"{vocab_path.parent} has vocab.json but no merges.txt, which a byte-level BPE needs")
    vocab = _read_vocab(vocab_path)
    # Like HF: the first line (#version) and the last (empty after the final newline) are skipped;
    # a repeated merge keeps its first rank.
    merges = {}
    for n, line in enumerate(read_text(merges_path).split("\n")[1:-1], start=2):
        pair = tuple(line.split())
        if len(pair) != 2:
            raise LmatlasError(f"line {n} of {merges_path} is not a pair of tokens: {line!r}")
        merges.setdefault(pair, len(merges))
    pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=cfg.get("add_prefix_space", False))
    return bytelevel_bpe(vocab, list(merges), pre_tokenizer)


def bytelevel_bpe(vocab: dict[str, int], merges: list[tuple[str, str]], pre_tokenizer) -> RustTokenizer:
    """GPT-2's byte-level BPE over a vocabulary and ranked merges, after ``pre_tokenizer``."""
    bpe = models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    tok = RustTokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    return tok


def build_spm(path: Path, family: Family, cfg: dict) -> RustTokenizer:
    spm = _read_spm(path)
    vocab = family.spm_vocab(spm, cfg)
    if spm.model_type == SPM_UNIGRAM:
        model = models.Unigram(vocab, unk_id=family.spm_unk_id(spm, cfg), byte_fallback=False)
    else:  # SPM_BPE
        original = {piece: i for i, (piece, _, _) in enumerate(spm.pieces)}
        model = models.BPE(
            {piece: i for i, (piece, _) in enumerate(vocab)},
            _bpe_merges_by_score(original, vocab),
            unk_token=spm.unk_piece,
            fuse_unk=True,
            byte_fallback=False,
            dropout=None,
        )
    tok = RustTokenizer(model)
    tok.normalizer = family.spm_normalizer(spm, cfg)
    prepend = "first" if family.legacy_option and cfg.get("legacy", True) is False else "always"
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend)
    if family.spm_split_whitespace:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), metaspace])
    else:
        tok.pre_tokenizer = metaspace
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend)
    # Control and user-defined pieces are matched before the model sees the text; only control
    # pieces count as special (skipped by decode(skip_special_tokens=True)).
    kept = [(p, t) for p, _, t in spm.pieces if t in (SPM_CONTROL, SPM_USER_DEFINED)]
    tok.add_tokens([AddedToken(p, normalized=False, special=t == SPM_CONTROL) for p, t in kept])
    return tok


class PieceSegmenter:
    """Marian's segmentation, as transformers' MarianTokenizer does it: special tokens are split
    out of the text, a leading ``>>lang<<`` code is kept whole, and the rest is cut into pieces
    by the ``sentencepiece`` library with the given model (source or target)."""

    def __init__(self, path: Path, specials: list[str]):
        import sentencepiece

        _read_spm(path)  # a clear error for a file that is not a model, or not one we can use
        self.path = path
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        ordered = sorted(set(specials), key=len, reverse=True)  # the longest special token wins
        self.split = re.compile("(" + "|".join(re.escape(t) for t in ordered) + ")") if ordered else None
        self.specials = set(specials)

    def __call__(self, text: str) -> list[str]:
        words: list[str] = []
        for part in self.split.split(text) if self.split else [text]:
            if not part:
                continue
            if part in self.specials:
                words.append(part)
                continue
            if part.startswith(">>") and (end := part.find("<<")) != -1:
                words.append(part[: end + 2])
                part = part[end + 2 :]
            words += self.sp.encode(part, out_type=str)
        return words

    def decode(self, tokens: list[str], special: set[str], skip_special_tokens: bool) -> str:
        """The text of ``tokens``, as transformers' MarianTokenizer decodes: runs of pieces are
        joined by the SentencePiece model, special tokens kept as they are (or skipped)."""
        out, run = "", []
        for token in tokens:
            if token in special:
                if skip_special_tokens:
                    continue
                out += self.sp.decode_pieces(run) + token + " "
                run = []
            else:
                run.append(token)
        out += self.sp.decode_pieces(run)
        return out.replace("\u2581", " ").strip()


def build_marian(folder: Path, cfg: dict, specials: dict, target: bool = False):
    """A word-level backend over Marian's ``vocab.json`` (or ``target_vocab.json`` for targets
    with separate vocabularies) and the segmenter of its source or target SentencePiece model."""
    separate = bool(cfg.get("separate_vocabs", False))
    vocab_file = folder / ("target_vocab.json" if target and separate else "vocab.json")
    spm_file = folder / ("target.spm" if target else "source.spm")
    for f in (vocab_file, spm_file):
        if not f.is_file():
            raise LmatlasError(f"{folder} has source.spm but no {f.name}, which a Marian tokenizer needs")
    vocab = _read_vocab(vocab_file)
    unk = specials.get("unk_token")
    if unk not in vocab:
        raise LmatlasError(f"{vocab_file} has no {unk} token, which Marian needs for unknown pieces")
    tok = RustTokenizer(models.WordLevel(vocab, unk_token=unk))
    named = [t for t in specials.values() if t]
    extra = [token_content(t) for t in cfg.get("additional_special_tokens") or []]
    return tok, PieceSegmenter(spm_file, named + extra)


def _read_vocab(path: Path) -> dict[str, int]:
    """A ``vocab.json``: a JSON object of token -> id."""
    vocab = read_json(path)
    if not all(isinstance(i, int) for i in vocab.values()):
        raise LmatlasError(f"{path}: expected a JSON object of token -> id")
    return vocab


def _read_spm(path: Path) -> SpmModel:
    """A SentencePiece model of a kind ``tokenizers`` has a model for (unigram or BPE)."""
    spm = read_sentencepiece_model(path)
    if spm.model_type not in (SPM_UNIGRAM, SPM_BPE):
        raise LmatlasError(f"{path} is a SentencePiece word or char model; only unigram and BPE are supported")
    return spm
