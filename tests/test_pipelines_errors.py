"""Mistakes a user can make with lmatlas.pipeline: each is one clear LmatlasError."""

from __future__ import annotations

import pytest

import lmatlas

from .helpers_pipelines import SENTENCES, build_model, error, train_tokenizers  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    toks = train_tokenizers(root / "tok")
    return {
        "mlm": build_model(root, toks, "bert", "masked-lm"),
        "sentiment": build_model(root, toks, "roberta", "sequence-classification",
                                 id2label={0: "NEG", 1: "POS"}, label2id={"NEG": 0, "POS": 1}),
        "qa": build_model(root, toks, "distilbert", "question-answering"),
        "ner": build_model(root, toks, "bert", "token-classification"),
    }


def test_unknown_task():
    msg = error(lmatlas.pipeline, "sentiment-analyses")
    assert "unknown task 'sentiment-analyses'" in msg and "did you mean 'sentiment-analysis'" in msg
    assert "fill-mask" in msg  # and it lists the known ones


def test_task_without_default_model_names_the_checkpoints_it_needs():
    msg = error(lmatlas.pipeline, "fill-mask")
    assert "no default model" in msg and "ForMaskedLM" in msg and "bert-base-uncased" in msg
    msg = error(lmatlas.pipeline, "question-answering")
    assert "ForQuestionAnswering" in msg and "squad" in msg


def test_model_without_the_head(folders):
    msg = error(lmatlas.pipeline, "fill-mask", folders["sentiment"])
    assert "masked language model" in msg and "ForMaskedLM" in msg
    assert "has a sequence-classification head" in msg and "RobertaForSequenceClassification" in msg
    msg = error(lmatlas.pipeline, "ner", folders["qa"])
    assert "ForTokenClassification" in msg and "question-answering head" in msg
    msg = error(lmatlas.pipeline, "question-answering", folders["mlm"])
    assert "ForQuestionAnswering" in msg and "masked-lm head" in msg
    msg = error(lmatlas.pipeline, "text-generation", folders["mlm"])
    assert "ForCausalLM" in msg
    msg = error(lmatlas.pipeline, "summarization", folders["ner"])
    assert "summarization needs an encoder-decoder model" in msg and "ForConditionalGeneration" in msg
    assert "has a token-classification head (architectures: BertForTokenClassification)" in msg
    msg = error(lmatlas.pipeline, "translation_en_to_de", folders["sentiment"])
    assert "translation_en_to_de needs an encoder-decoder model" in msg and "sequence-classification head" in msg


def test_zero_shot_needs_an_entailment_label(folders):
    msg = error(lmatlas.pipeline, "zero-shot-classification", folders["sentiment"])
    assert "'entailment' label" in msg and "'NEG', 'POS'" in msg and "sentence-embedding" in msg


def test_mask_token_missing(folders):
    fill = lmatlas.pipeline("fill-mask", folders["mlm"])
    msg = error(fill, "No mask in this sentence.")
    assert "no mask token [MASK]" in msg
    msg = error(fill, ["A [MASK] film.", "No mask here."])
    assert msg.startswith("input 1: no mask token")
    assert len(fill("A [MASK] film.")) == 5


def test_empty_candidate_labels():
    zs = lmatlas.pipeline("zero-shot-classification")
    for labels in ([], "", " , "):
        assert "candidate_labels is empty" in error(zs, "A text.", candidate_labels=labels)
    assert "needs candidate_labels" in error(zs, "A text.")
    assert "has no {}" in error(zs, "A text.", candidate_labels=["a"], hypothesis_template="It is about it.")


def test_question_without_context(folders):
    qa = lmatlas.pipeline("question-answering", folders["qa"])
    assert "no context" in error(qa, {"question": "Who?"})
    assert "needs a question and a context" in error(qa, question="Who?")
    assert "the context is empty" in error(qa, {"question": "Who?", "context": "  "})
    assert "input 1: the input has no context" in error(qa, [{"question": "Who?", "context": "Ana."}, {"question": "Who?"}])
    assert "takes {'question'" in error(qa, ["Who?"])


def test_bad_options(folders):
    fill = lmatlas.pipeline("fill-mask", folders["mlm"])
    assert "top_k must be a positive integer" in error(fill, "A [MASK].", top_k=0)
    assert "fill-mask takes no option 'topk'" in error(fill, "A [MASK].", topk=3)
    ner = lmatlas.pipeline("ner", folders["ner"])
    assert "aggregation_strategy='biggest' is not one of none, simple" in error(ner, "x", aggregation_strategy="biggest")
    assert 'stride needs an aggregation_strategy other than "none"' in error(ner, "x", stride=8)
    assert "stride must be less than the model's 64 tokens" in error(ner, "x", stride=64, aggregation_strategy="first")
    cls = lmatlas.pipeline("text-classification", folders["sentiment"])
    assert "function_to_apply='tanh' is not one of" in error(cls, "x", function_to_apply="tanh")
    assert "a text pair is {'text'" in error(cls, {"txt": "a", "text_pair": "b"})
    assert "takes a text, a pair" in error(cls, [["a", "b"]])


def test_encoder_decoder_tasks_say_what_they_need():
    for task in ("summarization", "translation", "translation_en_to_fr", "text2text-generation"):
        msg = error(lmatlas.pipeline, task)
        assert "encoder-decoder" in msg and "BART" in msg
