"""lmatlas.pipeline against transformers.pipeline (4.57.6) on the same checkpoints.

Random-weight BERT, RoBERTa and DistilBERT models with real tokenizers (a cased WordPiece and
a byte-level BPE trained on SST-2, and the default model's uncased WordPiece vocabulary), label
sets with odd names. Labels, tokens, words, spans and
answers must be identical; scores within 1e-4. Every option the issue names is exercised.
"""

from __future__ import annotations

import warnings

import pytest

import lmatlas

from .helpers_pipelines import (
    CONTEXT,
    NER_LABELS,
    NLI_LABELS,
    QUESTIONS,
    SENTENCES,
    SENTIMENT_LABELS,
    assert_same,
    build_model,
    hf_pipeline,
    same,
    train_tokenizers,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# bert-uncased: the default model's real vocabulary (uncased, accents stripped, 30,522 tokens).
# ernie: BERT's tokenizer and heads over ERNIE 3.0's embeddings (task types).
FAMILIES = ["bert", "roberta", "distilbert", "bert-uncased", "ernie"]
# Big Bird (BERT's tokenizer here; its own QA head, question masked; no NLI test).
CLASSIFIERS = [*FAMILIES, "big_bird"]
# Seeds whose random NER heads tag the test sentences with a mix of labels (B-, I-, O, MISC).
NER_SEEDS = {"bert": 2, "roberta": 4, "distilbert": 5, "bert-uncased": 5, "ernie": 2, "big_bird": 2}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    toks = train_tokenizers(root / "tokenizers")
    out = {}
    for family in CLASSIFIERS:
        out[family, "fill-mask"] = build_model(root, toks, family, "masked-lm", seed=1)
        out[family, "text-classification"] = build_model(
            root, toks, family, "sequence-classification", seed=2,
            id2label=SENTIMENT_LABELS, label2id={v: k for k, v in SENTIMENT_LABELS.items()},
        )
        out[family, "token-classification"] = build_model(
            root, toks, family, "token-classification", seed=NER_SEEDS[family],
            id2label=NER_LABELS, label2id={v: k for k, v in NER_LABELS.items()},
        )
        out[family, "question-answering"] = build_model(root, toks, family, "question-answering", seed=4)
        if family not in FAMILIES:
            continue
        out[family, "zero-shot-classification"] = build_model(
            root, toks, family, "sequence-classification", name=f"{family}-nli", seed=5,
            id2label=NLI_LABELS, label2id={v: k for k, v in NLI_LABELS.items()},
        )
    # Heads whose scores are not a softmax, and an NLI model whose entailment label comes first.
    out["multi-label"] = build_model(
        root, toks, "bert", "sequence-classification", name="multi-label", seed=6,
        id2label={0: "funny", 1: "sad", 2: "long", 3: "loud"}, label2id={"funny": 0, "sad": 1, "long": 2, "loud": 3},
        problem_type="multi_label_classification",
    )
    out["regression"] = build_model(
        root, toks, "roberta", "sequence-classification", name="regression", seed=7,
        id2label={0: "stars"}, label2id={"stars": 0}, problem_type="regression",
    )
    out["one-label"] = build_model(
        root, toks, "distilbert", "sequence-classification", name="one-label", seed=8,
        id2label={0: "toxic"}, label2id={"toxic": 0},
    )
    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    out["nli-entailment-first"] = build_model(
        root, toks, "roberta", "sequence-classification", name="nli-first", seed=9,
        id2label=labels, label2id={v: k for k, v in labels.items()},
    )
    return out


_PIPES: dict = {}


def pipes(folders, key, task=None):
    """(transformers pipeline, lmatlas pipeline) for a folder, built once."""
    key = key if isinstance(key, tuple) else (key,)
    task = task or key[1]
    folder = folders[key if len(key) > 1 else key[0]]
    if (folder, task) not in _PIPES:
        _PIPES[folder, task] = (hf_pipeline(task, folder), lmatlas.pipeline(task, folder))
    return _PIPES[folder, task]


# -- fill-mask ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_fill_mask(folders, family):
    hf, ours = pipes(folders, (family, "fill-mask"))
    m = hf.tokenizer.mask_token
    one, two = f"The film is {m} and moving.", f"A {m} film with {m} acting."
    same(hf, ours, one)
    same(hf, ours, one, top_k=1)
    same(hf, ours, one, top_k=12)
    same(hf, ours, two)  # several masks: a list per mask
    same(hf, ours, two, top_k=3)
    # targets in the vocabulary and outside it (the first token stands in, with a warning)
    same(hf, ours, one, targets=["good", "bad", "film", "acting"])
    same(hf, ours, one, targets=["good", "bad", " superb", "Zzyzx"], top_k=2)
    same(hf, ours, two, targets="good")
    # a list of texts (two, since transformers unwraps a list of one)
    assert len(ours([one, two])) == 2
    same(hf, ours, [one, two], top_k=2)


# -- text-classification ------------------------------------------------------------------------


OPTIONS_CLS = [{}, {"top_k": 1}, {"top_k": 2}, {"top_k": None}, {"function_to_apply": "sigmoid"},
               {"function_to_apply": "none", "top_k": None}, {"function_to_apply": "softmax", "top_k": 3}]


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_text_classification(folders, family):
    hf, ours = pipes(folders, (family, "text-classification"))
    pair = {"text": SENTENCES[3], "text_pair": "It was boring, but the acting is superb."}
    for options in OPTIONS_CLS:
        same(hf, ours, SENTENCES[0], **options)
        same(hf, ours, SENTENCES, **options)
        same(hf, ours, pair, **options)
        same(hf, ours, [pair, {"text": SENTENCES[1]}], **options)


@pytest.mark.parametrize("kind", ["multi-label", "regression", "one-label"])
def test_text_classification_heads(folders, kind):
    hf, ours = pipes(folders, kind, "text-classification")
    for options in OPTIONS_CLS:
        same(hf, ours, SENTENCES, **options)


def test_sentiment_analysis_alias(folders):
    hf, ours = pipes(folders, ("bert", "text-classification"), "sentiment-analysis")
    same(hf, ours, SENTENCES[2])


# -- token-classification -----------------------------------------------------------------------


@pytest.mark.parametrize("family", CLASSIFIERS)
@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification(folders, family, strategy):
    hf, ours = pipes(folders, (family, "token-classification"), "ner")
    same(hf, ours, SENTENCES, aggregation_strategy=strategy)
    same(hf, ours, SENTENCES[0], aggregation_strategy=strategy, ignore_labels=[])
    same(hf, ours, SENTENCES[1], aggregation_strategy=strategy, ignore_labels=["O", "MISC", "B-ORG"])
    got = ours(SENTENCES[0], aggregation_strategy=strategy, ignore_labels=[])
    assert len(got) > 1


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_token_classification_stride(folders, family):
    """A text longer than the model's 64 tokens, read in overlapping windows."""
    hf, ours = pipes(folders, (family, "token-classification"))
    text = " ".join([SENTENCES[0], CONTEXT])
    for strategy in ["simple", "first", "max"]:
        same(hf, ours, text, aggregation_strategy=strategy, stride=16)


# -- question-answering -------------------------------------------------------------------------


OPTIONS_QA = [
    {},
    {"top_k": 3},
    {"max_answer_len": 2, "top_k": 2},
    {"align_to_words": False, "top_k": 4},
    {"handle_impossible_answer": True},
    {"handle_impossible_answer": True, "top_k": 30},
    {"max_seq_len": 32, "doc_stride": 8, "top_k": 3},  # many windows over the context
    {"max_seq_len": 40, "doc_stride": 20, "handle_impossible_answer": True, "top_k": 2},
]


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_question_answering(folders, family):
    hf, ours = pipes(folders, (family, "question-answering"))
    short = CONTEXT.split(". ")[1] + "."
    for options in OPTIONS_QA:
        for context in (short, CONTEXT):  # CONTEXT is longer than the model: windows by doc_stride
            same(hf, ours, {"question": QUESTIONS[1], "context": context}, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = hf(question=QUESTIONS[0], context=CONTEXT, **options)
        assert_same(expected, ours(question=QUESTIONS[0], context=CONTEXT, **options))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(hf(question=QUESTIONS, context=CONTEXT, top_k=2), ours(question=QUESTIONS, context=CONTEXT, top_k=2))


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_question_answering_impossible_answer(folders, family):
    """In a context of a few tokens the empty answer ranks among the spans.

    top_k is the number of spans, so that transformers has no zero-probability spans to pad its
    list with (lmatlas never returns those)."""
    hf, ours = pipes(folders, (family, "question-answering"))
    answers = []
    for context in ("Lisbon", "in Porto", "Zürich, 1987"):
        n = len(ours.tokenizer(context, add_special_tokens=False)["input_ids"])
        options = dict(handle_impossible_answer=True, align_to_words=False, top_k=n * (n + 1) // 2)
        same(hf, ours, {"question": QUESTIONS[1], "context": context}, **options)
        got = ours(question=QUESTIONS[1], context=context, **options)
        answers += [a["answer"] for a in (got if isinstance(got, list) else [got])]
    assert "" in answers


# -- zero-shot-classification through NLI --------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_shot_nli(folders, family):
    hf, ours = pipes(folders, (family, "zero-shot-classification"))
    labels = ["cinema", "cooking", "politics", "sport", "travel"]
    same(hf, ours, SENTENCES, candidate_labels=labels)
    same(hf, ours, SENTENCES[0], candidate_labels=labels, multi_label=True)
    same(hf, ours, SENTENCES[1], candidate_labels=labels, hypothesis_template="The review is about {}.")
    same(hf, ours, SENTENCES[2], candidate_labels="cinema")  # one label: entailment against contradiction
    same(hf, ours, SENTENCES[2], candidate_labels="cinema, food ,politics,")  # a comma-separated string


def test_zero_shot_entailment_first(folders):
    hf, ours = pipes(folders, "nli-entailment-first", "zero-shot-classification")
    same(hf, ours, SENTENCES, candidate_labels=["cinema", "cooking", "politics"], multi_label=True)
    same(hf, ours, SENTENCES, candidate_labels=["cinema", "cooking", "politics"])
