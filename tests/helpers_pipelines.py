"""Checkpoints for the pipeline parity tests: tiny random-weight models that transformers writes,
with real tokenizers trained on SST-2 text (a cased WordPiece and a byte-level BPE), and label
sets with odd names.

transformers builds each model with random weights and saves it beside the tokenizer files;
then ``transformers.pipeline`` and ``lmatlas.pipeline`` read the same folder.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from lmatlas import LmatlasError

from .paths import data_file
from .reference import default_model_path, randomize, transformers

NER_LABELS = {0: "B-PER", 1: "I-PER", 2: "O", 3: "B-LOC", 4: "I-LOC", 5: "MISC", 6: "B-ORG"}
NLI_LABELS = {0: "NEUTRAL", 1: "Entailment", 2: "contradiction"}
SENTIMENT_LABELS = {0: "negative :(", 1: "positive :)", 2: "mixed/other"}

# Words the SST-2 tokenizers split into pieces or do not know, so that subwords and [UNK] show.
SENTENCES = [
    "Jean-Luc Godard's Breathless is an unforgettable, exhilarating film about Paris.",
    "The screenplay by Ms. Nakamura never quite coheres, but the acting is superb.",
    "I watched it twice in Zürich and once in New York; it was boring.",
    "A quietly devastating portrait of grief.",
]
CONTEXT = (
    "The film was shot in Lisbon during the winter of 1987 by a crew of twelve people. "
    "Its director, Ana Ribeiro, had previously worked as a photographer for a newspaper in Porto. "
    "The budget was small, and most of the actors were friends of the director. "
    "After its premiere at a festival in Berlin, the film won the audience award and was "
    "distributed in more than thirty countries, although critics were divided about its ending."
)
QUESTIONS = ["Where was the film shot?", "Who directed it?", "What did the film win in Berlin?"]


def _sst2(n: int) -> list[str]:
    lines = data_file("sst2", "train.tsv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    return [line.split("\t")[0] for line in lines]


def train_tokenizers(root: Path) -> dict[str, Path]:
    """A cased WordPiece (BERT) and a byte-level BPE (RoBERTa), each in its own folder."""
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer

    text = _sst2(4000) + SENTENCES + [CONTEXT] + QUESTIONS
    wp_dir, bpe_dir = root / "wordpiece", root / "bpe"
    wp_dir.mkdir(parents=True)
    bpe_dir.mkdir(parents=True)
    wp = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    wp.train_from_iterator(text, vocab_size=900, min_frequency=2,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    wp.save_model(str(wp_dir))
    (wp_dir / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": False, "model_max_length": 64})
    )
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(text, vocab_size=900, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(bpe_dir))
    (bpe_dir / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "RobertaTokenizer", "model_max_length": 64})
    )
    # The default model's own uncased WordPiece vocabulary (30,522 tokens, accents stripped).
    minilm = root / "minilm"
    minilm.mkdir()
    source = default_model_path()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (minilm / name).write_bytes((source / name).read_bytes())
    return {"wordpiece": wp_dir, "bpe": bpe_dir, "minilm": minilm}


CLASSES = {
    "bert-uncased": {"masked-lm": "BertForMaskedLM", "sequence-classification": "BertForSequenceClassification",
                     "token-classification": "BertForTokenClassification",
                     "question-answering": "BertForQuestionAnswering"},
    "bert": {"masked-lm": "BertForMaskedLM", "sequence-classification": "BertForSequenceClassification",
             "token-classification": "BertForTokenClassification", "question-answering": "BertForQuestionAnswering"},
    "roberta": {"masked-lm": "RobertaForMaskedLM", "sequence-classification": "RobertaForSequenceClassification",
                "token-classification": "RobertaForTokenClassification",
                "question-answering": "RobertaForQuestionAnswering"},
    "distilbert": {"masked-lm": "DistilBertForMaskedLM",
                   "sequence-classification": "DistilBertForSequenceClassification",
                   "token-classification": "DistilBertForTokenClassification",
                   "question-answering": "DistilBertForQuestionAnswering"},
}
CLASSES["ernie"] = {head: name.replace("Bert", "Ernie") for head, name in CLASSES["bert"].items()}
CLASSES["big_bird"] = {head: name.replace("Bert", "BigBird") for head, name in CLASSES["bert"].items()}
TOKENIZER_OF = {"big_bird": "wordpiece", "ernie": "wordpiece", "bert": "wordpiece", "distilbert": "wordpiece", "roberta": "bpe", "bert-uncased": "minilm"}


def build_model(root: Path, tokenizers: dict[str, Path], family: str, head: str, name: str | None = None,
                seed: int = 0, std: float = 0.3, **config) -> Path:
    """A random-weight ``family`` model with ``head``, saved with its tokenizer in ``root/name``."""
    tf = transformers()
    tok_dir = tokenizers[TOKENIZER_OF[family]]
    vocab = 900 + 5  # room for the added special tokens
    if family == "bert-uncased":  # the real MiniLM vocabulary and its 512 positions
        cfg = tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=48, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0)
    elif family == "bert":
        cfg = tf.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=48, max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
    elif family == "ernie":  # ERNIE 3.0's shape of embeddings: four token types, three task types
        cfg = tf.ErnieConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=48, max_position_embeddings=64, type_vocab_size=4, pad_token_id=0,
                             use_task_id=True, task_type_vocab_size=3)
    elif family == "big_bird":  # full attention: the test sentences are shorter than its sparse pattern
        cfg = tf.BigBirdConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=48, max_position_embeddings=64, type_vocab_size=2, pad_token_id=0,
                               attention_type="original_full")
    elif family == "distilbert":
        cfg = tf.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                                  max_position_embeddings=64, pad_token_id=0)
    else:
        cfg = tf.RobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=48, max_position_embeddings=66, type_vocab_size=1,
                               pad_token_id=1, bos_token_id=0, eos_token_id=2)
    for key, value in config.items():
        setattr(cfg, key, value)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(tf, CLASSES[family][head])(cfg).eval()
    randomize(model, seed=seed, std=std)
    with torch.no_grad():  # norm biases shared by every token would make one label win everywhere
        for pname, p in model.named_parameters():
            if p.ndim == 1 and "norm" in pname.lower() and pname.endswith("bias"):
                p.zero_()
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    folder = root / (name or f"{family}-{head}")
    model.save_pretrained(folder)
    for f in tok_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    if family == "distilbert":  # its tokenizer gives no token types
        config_file = folder / "tokenizer_config.json"
        tok_cfg = json.loads(config_file.read_text())
        config_file.write_text(json.dumps({**tok_cfg, "tokenizer_class": "DistilBertTokenizer"}))
    return folder


def error(fn, *args, **kwargs) -> str:
    """The message of the LmatlasError that ``fn(*args, **kwargs)`` raises: one line."""
    with pytest.raises(LmatlasError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    return message


def same(hf, ours, inputs, **options) -> float:
    """Both pipelines on the same inputs and options: the same output (see ``assert_same``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf(inputs, **options)
        got = ours(inputs, **options)
    return assert_same(expected, got)


def hf_pipeline(task: str, folder: Path, **kwargs):
    tf = transformers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.pipeline(task, model=str(folder), tokenizer=str(folder), **kwargs)


def plain(value):
    """numpy and torch scalars as Python numbers, recursively (transformers mixes them in)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


TOL = 1e-4


def assert_same(expected, got, path: str = "") -> float:
    """Same structure, keys, strings and integers; floats within TOL. Returns the largest float gap."""
    expected, got = plain(expected), plain(got)
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{path}: expected a dict, got {got!r:.200}"
        assert list(got) == list(expected), f"{path}: keys {list(got)} != {list(expected)}"
        return max([assert_same(expected[k], got[k], f"{path}.{k}") for k in expected] or [0.0])
    if isinstance(expected, list):
        assert isinstance(got, list), f"{path}: expected a list, got {got!r:.200}"
        assert len(got) == len(expected), f"{path}: {len(got)} items != {len(expected)}: {got!r:.300} vs {expected!r:.300}"
        try:
            return max([assert_same(e, g, f"{path}[{i}]") for i, (e, g) in enumerate(zip(expected, got))] or [0.0])
        except AssertionError:
            if not _ranked(expected):
                raise
            return _assert_same_ranking(expected, got, path)
    if isinstance(expected, float):
        assert isinstance(got, (float, int)) and not isinstance(got, bool), f"{path}: {got!r} is not a number"
        gap = abs(expected - got)
        assert gap <= TOL, f"{path}: {got} != {expected} (gap {gap:.2e})"
        return gap
    assert type(got) is type(expected) and got == expected, f"{path}: {got!r} != {expected!r}"
    return 0.0


def _ranked(items: list) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("score"), float) for i in items)


def _assert_same_ranking(expected: list, got: list, path: str) -> float:
    """A ranked list (answers, spans, tokens by score): the same items, each score within TOL, in
    descending order. Two scores within TOL of each other are a tie that float noise between two
    libraries (summation order) may break either way, so such items may swap places."""
    scores = [g["score"] for g in got if isinstance(g, dict)]
    assert scores == sorted(scores, reverse=True), f"{path}: not in descending order of score: {got!r:.300}"
    left, gap = list(got), 0.0
    for i, e in enumerate(expected):
        for j, g in enumerate(left):
            try:
                gap = max(gap, assert_same(e, g, f"{path}[{i}]"))
            except AssertionError:
                continue
            del left[j]
            break
        else:
            raise AssertionError(f"{path}[{i}]: {e!r} has no counterpart in {got!r:.300}")
    return gap

