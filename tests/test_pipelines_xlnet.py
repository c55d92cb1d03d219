"""lmatlas.pipeline against transformers.pipeline (4.57.6) on XLNet folders.

Random-weight XLNet models saved with an XLNet tokenizer (a SentencePiece model of XLNet's
layout trained on SST-2, written by transformers' XLNetTokenizerFast): special tokens at the
end, padding on the left. Text classification (its summary reads the last token, so batches
are padded on the left), token classification, extractive question answering (context first,
as transformers orders it for a tokenizer that pads on the left) and text generation.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import lmatlas

from .helpers_pipelines import (
    CONTEXT,
    NER_LABELS,
    QUESTIONS,
    SENTENCES,
    SENTIMENT_LABELS,
    _sst2,
    assert_same,
    error,
    hf_pipeline,
    same,
)
from .helpers_tokenizer import train_sentencepiece
from .reference import randomize, transformers

pytestmark = pytest.mark.usefixtures("one_thread")

HEADS = {
    "text-classification": ("XLNetForSequenceClassification", SENTIMENT_LABELS),
    "token-classification": ("XLNetForTokenClassification", NER_LABELS),
    "question-answering": ("XLNetForQuestionAnsweringSimple", None),
    "text-generation": ("XLNetLMHeadModel", None),
    "beam": ("XLNetForQuestionAnswering", None),
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("xlnet-tokenizer")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(_sst2(3000) + SENTENCES + [CONTEXT] + QUESTIONS) + "\n", encoding="utf-8")
    spm = train_sentencepiece(root / "spm", "spiece.model", corpus, "unigram", unk_id=0, bos_id=1, eos_id=2,
                              pad_id=5, control_symbols=["<cls>", "<sep>"],
                              user_defined_symbols=["<mask>", "<eod>", "<eop>"])
    folder = root / "tokenizer"
    transformers().XLNetTokenizerFast(vocab_file=str(spm)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer_dir):
    tf = transformers()
    root = tmp_path_factory.mktemp("xlnet-pipelines")
    out = {}
    for seed, (task, (cls, labels)) in enumerate(HEADS.items()):
        config = tf.XLNetConfig(vocab_size=700, d_model=32, n_layer=2, n_head=4, d_inner=48, pad_token_id=5,
                                eos_token_id=2, bos_token_id=1, mem_len=None)
        if labels:
            config.id2label, config.label2id = labels, {v: k for k, v in labels.items()}
        torch.manual_seed(seed)
        model = getattr(tf, cls)(config).eval()
        randomize(model, seed=seed + 3, std=0.3)
        with torch.no_grad():  # norm biases shared by every token would make one label win everywhere
            for name, p in model.named_parameters():
                if "layer_norm" in name and name.endswith("bias"):
                    p.zero_()
        model.tie_weights()
        folder = root / task
        model.save_pretrained(folder)
        for f in tokenizer_dir.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        out[task] = folder
    return out


_PIPES: dict = {}


def pipes(folders, task, **hf_kwargs):
    key = (task, tuple(sorted(hf_kwargs.items())))
    if key not in _PIPES:
        _PIPES[key] = (hf_pipeline(task, folders[task], **hf_kwargs), lmatlas.pipeline(task, folders[task]))
    return _PIPES[key]


def test_tokenizer_pads_on_the_left(folders):
    hf, ours = pipes(folders, "text-classification")
    assert ours.tokenizer.padding_side == hf.tokenizer.padding_side == "left"
    kw = dict(padding=True, return_token_type_ids=True)
    assert_same(dict(hf.tokenizer(SENTENCES[:2], SENTENCES[2:], **kw)), dict(ours.tokenizer(SENTENCES[:2], SENTENCES[2:], **kw)))


def test_slow_tokenizer_agrees_on_pairs_and_padding(tokenizer_dir):
    """transformers' slow XLNetTokenizer (sentencepiece itself) gives lmatlas' ids, token types
    (<cls> 2, padding 3) and masks on pairs and padded batches; the fast one is checked on every
    output in test_tokenizer. (The slow one strips the text first, so texts here have no
    whitespace at their ends, where the fast one and lmatlas keep a space piece.)"""
    from lmatlas.tokenizer import load_tokenizer

    slow = transformers().XLNetTokenizer.from_pretrained(str(tokenizer_dir))
    ours = load_tokenizer(tokenizer_dir)
    texts = [t.strip() for t in _sst2(60)]
    kw = dict(padding=True, return_token_type_ids=True)
    assert_same(dict(slow(texts[::2], texts[1::2], **kw)), dict(ours(texts[::2], texts[1::2], **kw)))
    assert_same(dict(slow(texts, **kw)), dict(ours(texts, **kw)))
    assert ours(texts[:3], **kw)["token_type_ids"][0][0] == 3  # padded on the left, with type 3


@pytest.mark.parametrize("options", [{}, {"top_k": 2}, {"top_k": None}, {"function_to_apply": "sigmoid"}])
def test_text_classification(folders, options):
    """transformers reads one text at a time; lmatlas batches them, padded on the left."""
    hf, ours = pipes(folders, "text-classification")
    pair = {"text": SENTENCES[3], "text_pair": "It was boring, but the acting is superb."}
    same(hf, ours, SENTENCES[0], **options)
    same(hf, ours, SENTENCES, **options)
    same(hf, ours, [pair, {"text": SENTENCES[1]}], **options)


def test_transformers_cannot_batch_xlnet(folders):
    """transformers' pipelines cannot batch XLNet (they cut its memory, a tuple per layer, as if
    it were per text); lmatlas batches, padded on the left, and gives the one-at-a-time answers."""
    hf4, ours = pipes(folders, "text-classification", batch_size=4)
    with pytest.raises(IndexError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf4(SENTENCES)
    hf, _ = pipes(folders, "text-classification")
    assert_same(hf(SENTENCES), ours(SENTENCES, batch_size=4))
    assert_same(hf(SENTENCES), ours(SENTENCES, batch_size=1))


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification(folders, strategy):
    hf, ours = pipes(folders, "token-classification")
    same(hf, ours, SENTENCES, aggregation_strategy=strategy)
    same(hf, ours, SENTENCES[0], aggregation_strategy=strategy, ignore_labels=[])
    assert len(ours(SENTENCES[0], aggregation_strategy=strategy, ignore_labels=[])) > 1


@pytest.mark.parametrize("options", [{}, {"top_k": 3}, {"handle_impossible_answer": True, "top_k": 2},
                                     {"align_to_words": False, "top_k": 4},
                                     {"max_seq_len": 40, "doc_stride": 12, "top_k": 3}])
def test_question_answering(folders, options):
    """The simple head (start and end scores); the context comes first, as transformers puts it for
    a tokenizer that pads on the left."""
    hf, ours = pipes(folders, "question-answering")
    short = CONTEXT.split(". ")[1] + "."
    for context in (short, CONTEXT):
        same(hf, ours, {"question": QUESTIONS[1], "context": context}, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf(question=QUESTIONS, context=CONTEXT, **options)
    assert_same(expected, ours(question=QUESTIONS, context=CONTEXT, **options))


def test_question_answering_beam_head_is_refused(folders):
    """XLNetForQuestionAnswering gives a beam of spans, not start and end scores: transformers'
    pipeline fails on its output; lmatlas says so."""
    tf = transformers()
    model = tf.XLNetForQuestionAnswering.from_pretrained(folders["beam"]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = tf.pipeline("question-answering", model=model, tokenizer=tf.AutoTokenizer.from_pretrained(folders["beam"]))
    with pytest.raises(KeyError, match="start_logits"):
        pipe(question=QUESTIONS[0], context=CONTEXT)
    message = error(lmatlas.pipeline, "question-answering", folders["beam"])
    assert "XLNetForQuestionAnsweringSimple" in message and "start_top_index" in message


@pytest.mark.parametrize("options", [dict(max_new_tokens=8, do_sample=False),
                                     dict(max_new_tokens=6, do_sample=False, return_full_text=False),
                                     dict(max_new_tokens=5, num_beams=2, do_sample=False)])
def test_text_generation(folders, options):
    """transformers' pipeline puts a fixed article before every XLNet prompt unless a prefix is
    given; lmatlas has no such default, so both read the prompt with prefix="" here. Prompts end
    with <sep> <cls> (the tokenizer's special tokens); of different lengths they go one at a time
    (XLNet's generation reads padding as text), of one length in one batch."""
    hf, ours = pipes(folders, "text-generation", prefix="")
    prompts = [SENTENCES[0], "A quietly devastating"]
    same(hf, ours, prompts[0], **options)
    same(hf, ours, prompts, **options)
    by_length: dict[int, list[str]] = {}
    for text in ["The film was", "It was boring", "A quietly moving", "The acting is", "Nakamura wrote it",
                 "A portrait of", "The screenplay never"]:
        by_length.setdefault(len(ours.tokenizer(text)["input_ids"]), []).append(text)
    even = next(texts for texts in by_length.values() if len(texts) > 1)
    same(hf, ours, even[:2], **options)  # one batch: nothing padded
    got = ours(prompts[1], max_new_tokens=8, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    assert len(got) == len(ours.tokenizer(prompts[1])["input_ids"]) + 8
