"""Task pipelines: ``lmatlas.pipeline(task, model)`` with transformers' task names, options and
output schemas (those of transformers 4.x, whose question-answering, summarization, translation
and text2text pipelines the tutorials in the notes use).

One module per task family; this file is the registry: which task names there are, which head a
checkpoint needs for each, and which tasks the default model (all-MiniLM-L6-v2) serves.

Where lmatlas differs from transformers 4.57 (each time where transformers crashes, warns or
returns something odd):

- a list in always gives a list out (transformers unwraps a list of one for fill-mask and
  question-answering);
- question-answering returns a dict exactly when ``top_k == 1``, and never returns spans of zero
  probability (transformers pads short contexts' lists with them);
- texts longer than the model are cut to its positions for classification, NER and zero-shot;
  fill-mask and feature-extraction refuse them, naming the truncation option (transformers
  indexes past the position table);
- zero-shot-classification with a model that has no "entailment" label is an error (transformers
  warns and takes the last label); with a sentence-embedding model it compares embeddings;
- text-generation, summarization, translation, text2text-generation: ``max_length`` replaces the
  pipeline's default of 256 new tokens (transformers ignores it, with a warning);
- text-generation with chats: a list mixing prompts and chats is read item by item (transformers
  judges the whole list by its first item); continuing a final message whose content is a list of
  parts adds the new text to its last text part (transformers fails); tools for the template are
  JSON schemas only (transformers also makes them from Python functions);
- summarization, translation, text2text-generation: token ids are lists, cut to each text's own
  longest output (transformers returns tensors padded to the longest output of the batch);
  ``return_text=False`` returns the token ids, and asking for both is an error (transformers
  ignores ``return_text``); an empty text is an error (transformers generates from the special
  tokens alone), and so is a text longer than the model reads unless ``truncation=True``
  (transformers indexes past the position table, or for T5 only warns); ``stop_sequence`` ends an
  output once its text holds it, and the model's end token still ends it (transformers makes the
  sequence's first token the only end token); the length warnings use the limit generation
  actually uses (transformers compares with ``max_length`` when ``max_new_tokens`` decides), and
  summarization's input-length warning comes only for a length the call sets;
- translation on mBART: ``src_lang`` and ``tgt_lang`` default to the tokenizer's, a two-letter
  language stands for the model's code (``translation_en_to_ro`` gives en_XX and ro_RO), an unknown
  code is an error (transformers needs both, and takes the unknown token for a code it lacks),
  and the model's prefix applies as for the other models (transformers drops it there); on a
  one-pair model (T5, Marian) ``src_lang`` and ``tgt_lang`` choose its ``task_specific_params``
  entry, such as T5's "translate English to French: " (transformers ignores them);
- the image tasks (``vision.py``) take file paths and PIL images (not URLs or base64), a single
  string as ``candidate_labels``, and read an image encoder's own outputs in
  image-feature-extraction whatever its head;
- XLNet: text-generation puts no text before the prompt (transformers puts a fixed article before
  every XLNet prompt unless given a ``prefix``) and generates prompts of different lengths one
  at a time (XLNet's generation reads padding as text); question-answering refuses XLNetForQuestionAnswering's beam
  head (transformers fails on its output) and reads XLNetForQuestionAnsweringSimple's scores;
  classification batches XLNet's texts, padded on the left (transformers cannot batch it);
- feature-extraction's ``pool=True``, the sentence-similarity task (the hub's schema) and the
  encoder-decoder tasks' ``prefix`` option are lmatlas' own; tokenizer arguments go in
  ``tokenizer_kwargs`` rather than loose keywords.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import LmatlasError
from .base import Pipeline

__all__ = ["Pipeline", "TASKS", "ALIASES", "pipeline", "task_names", "task_options"]


@dataclass(frozen=True)
class Task:
    name: str
    target: str  # "module:Class" in this package
    head: str | None  # the head the checkpoint must carry; None: any encoder (embedding tasks)
    needs: str  # the checkpoints that serve the task, for messages
    default: bool = False  # the default model serves it
    generative_default: bool = False  # the default generative model (SmolLM2-135M-Instruct) serves it
    images: bool = False  # it reads images (through the checkpoint's image processor)


_SEQ2SEQ = (
    "an encoder-decoder model (BART, T5, Pegasus, mBART, Marian) with its language-model head (architectures "
    "ending in ForConditionalGeneration, or MarianMTModel), such as facebook/bart-large-cnn, google-t5/t5-small "
    "or Helsinki-NLP/opus-mt-en-de"
)

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("fill-mask", "fill_mask:FillMask", "masked-lm",
             "a masked language model (architectures ending in ForMaskedLM), such as "
             "google-bert/bert-base-uncased, distilbert/distilroberta-base or albert/albert-base-v2"),
        Task("text-classification", "text_classification:TextClassification", "sequence-classification",
             "a sequence classifier (architectures ending in ForSequenceClassification, an encoder's or a "
             "decoder's), such as distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
        Task("token-classification", "token_classification:TokenClassification", "token-classification",
             "a token classifier (architectures ending in ForTokenClassification), such as dslim/bert-base-NER"),
        Task("question-answering", "question_answering:QuestionAnswering", "question-answering",
             "an extractive question-answering model (architectures ending in ForQuestionAnswering), such as "
             "distilbert/distilbert-base-cased-distilled-squad or deepset/roberta-base-squad2"),
        Task("zero-shot-classification", "zero_shot:ZeroShotNLI", "sequence-classification",
             "an NLI classifier with an 'entailment' label, such as cross-encoder/nli-distilroberta-base, "
             "or a sentence-embedding model (a sentence-transformers folder, like the default)", default=True),
        Task("feature-extraction", "embeddings:FeatureExtraction", None, "any encoder model", default=True),
        Task("sentence-similarity", "embeddings:SentenceSimilarity", None,
             "a sentence-embedding model, such as sentence-transformers/all-MiniLM-L6-v2", default=True),
        Task("text-generation", "generation:TextGeneration", "causal-lm",
             "a decoder with a language-model head (architectures ending in ForCausalLM or LMHeadModel), "
             "such as openai-community/gpt2 or EleutherAI/gpt-neo-125m", generative_default=True),
        Task("summarization", "seq2seq:Summarization", "seq2seq-lm", _SEQ2SEQ),
        Task("translation", "seq2seq:Translation", "seq2seq-lm", _SEQ2SEQ),
        Task("text2text-generation", "seq2seq:Text2TextGeneration", "seq2seq-lm", _SEQ2SEQ),
        Task("image-classification", "vision:ImageClassification", "image-classification",
             "an image classifier (architectures ending in ForImageClassification), such as "
             "google/vit-base-patch16-224", images=True),
        Task("zero-shot-image-classification", "vision:ZeroShotImageClassification", "base",
             "a CLIP model (CLIPModel), such as openai/clip-vit-base-patch32", images=True),
        Task("image-feature-extraction", "vision:ImageFeatureExtraction", None,
             "an image encoder (ViT, a CLIP model or its vision tower), such as google/vit-base-patch16-224-in21k",
             images=True),
    ]
}

ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
_TRANSLATION = re.compile(r"^translation_([a-z]{2,3})_to_([a-z]{2,3})$")


def task_names() -> list[str]:
    return sorted([*TASKS, *ALIASES, "translation_xx_to_yy"])


def task_options(task: str) -> dict:
    """The options ``task`` takes: name -> ``base.Option`` (default, check, help)."""
    spec = TASKS[canonical(task)]
    return dict(_class(spec.target).OPTIONS)


def canonical(task: str) -> str:
    """The registry's name for ``task`` (aliases and translation_xx_to_yy resolved)."""
    if not isinstance(task, str):
        raise LmatlasError(f"task must be a task name, not {task!r}")
    name = ALIASES.get(task, task)
    if _TRANSLATION.match(name):
        return "translation"
    if name not in TASKS:
        close = difflib.get_close_matches(task, task_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise LmatlasError(f"unknown task {task!r}{hint}; lmatlas knows: {', '.join(task_names())}")
    return name


def pipeline(
    task: str,
    model: str | os.PathLike | Any | None = None,
    *,
    tokenizer: Any = None,
    dtype: str | None = None,
    batch_size: int | None = None,
    quantize: str | None = None,
    dequantize: bool = False,
    **options: Any,
) -> Pipeline:
    """A callable for ``task`` on ``model``, as ``transformers.pipeline(task, model)``.

    ``model`` is a model folder, a hub id, or a model from ``lmatlas.load`` (then give
    ``tokenizer``). Without a model, the tasks the default model all-MiniLM-L6-v2 serves use it
    (feature-extraction, sentence-similarity, zero-shot-classification), text-generation uses
    SmolLM2-135M-Instruct; the others say which checkpoints they need. ``options`` are the task's options (``top_k``, ``aggregation_strategy``,
    ``candidate_labels``, ...), defaults for every call; a call may override them. ``quantize``
    and ``dequantize``: as ``lmatlas.load`` takes them, for a model the pipeline loads.
    """
    name = canonical(task)
    spec = TASKS[name]
    device = options.pop("device", None)
    if device not in (None, -1, "cpu") and str(device) != "cpu":
        raise LmatlasError(f"device={device!r}: lmatlas runs on the CPU (device='cpu')")
    extra = {"batch_size": batch_size} if batch_size is not None else {}
    if model is None and spec.generative_default:
        from ..defaults import generative_model

        model = generative_model()
    if model is None and not spec.default:
        raise LmatlasError(f"{task} has no default model; name one with model=: {spec.needs}")

    weights = {"quantize": quantize, "dequantize": dequantize}
    if spec.images:
        return _image_pipeline(spec, task, model, dtype, extra, options, weights)
    if spec.head is None or (name == "zero-shot-classification" and _is_sentence_model(model)):
        if tokenizer is not None:
            raise LmatlasError(f"{task} reads the tokenizer from the model folder; tokenizer= is not taken")
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise LmatlasError(f"{task} takes a model folder or hub id, not a loaded model")
        if quantize is not None:
            raise LmatlasError(f"quantize= is for language models; {task} runs a sentence-embedding model in float")
        from ..embeddings import SentenceEncoder, encoder

        enc = encoder(model) if dtype is None else SentenceEncoder(model, dtype=dtype)
        target = "zero_shot:ZeroShotEmbedding" if name == "zero-shot-classification" else spec.target
        return _class(target)(enc, task=task, **extra, **options)

    loaded, tok, source = _load(model, tokenizer, dtype, weights)
    if loaded.head_name == "question-answering-beam" and name == "question-answering":
        raise LmatlasError(
            f"question-answering reads start and end scores, and {source} is an XLNetForQuestionAnswering, whose "
            "head gives a beam of spans instead (transformers' pipeline cannot read it either): use an "
            "XLNetForQuestionAnsweringSimple checkpoint, or call the model for start_top_index and end_top_index"
        )
    if loaded.head_name != spec.head:
        has = "no task head" if loaded.head_name == "base" else f"a {loaded.head_name} head"
        archs = ", ".join(loaded.config.architectures or []) or "none"
        raise LmatlasError(
            f"{task} needs {spec.needs}; {source} has {has} (architectures: {archs})"
        )
    return _class(spec.target)(loaded, tok, task=task, **extra, **options)


def _image_pipeline(spec: Task, task: str, model: Any, dtype: str | None, extra: dict, options: dict,
                    weights: dict) -> Pipeline:
    """An image task on a model folder or hub id: the model, its image processor, and for
    zero-shot classification its tokenizer."""
    from ..checkpoint import resolve
    from ..images import ImageProcessor
    from ..loader import load
    from .vision import reads_images

    if not isinstance(model, (str, os.PathLike)):
        raise LmatlasError(f"{task} takes a model folder or hub id, not a loaded model")
    folder = resolve(model)
    loaded = load(folder, dtype=dtype, **weights)
    if not reads_images(loaded):
        raise LmatlasError(
            f"{task} needs {spec.needs}; {model} is a text model (model_type {loaded.config.model_type}), it reads no images"
        )
    zero_shot = spec.name == "zero-shot-image-classification"
    if (zero_shot and not loaded.is_dual_encoder) or (spec.head not in (None, "base") and loaded.head_name != spec.head):
        archs = ", ".join(loaded.config.architectures or []) or "none"
        raise LmatlasError(f"{task} needs {spec.needs}; {model} is not one (architectures: {archs})")
    tokenizer = None
    if zero_shot:
        from ..tokenizer import load_tokenizer

        tokenizer = load_tokenizer(folder)
    return _class(spec.target)(loaded, ImageProcessor.from_pretrained(folder), tokenizer, task=task, **extra, **options)


def _class(target: str) -> type:
    module, cls = target.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def _is_sentence_model(model: Any) -> bool:
    """The default model, or a sentence-transformers folder (it has a modules.json)."""
    if model is None:
        return True
    if not isinstance(model, (str, os.PathLike)):
        return False
    from ..checkpoint import resolve

    return (resolve(model) / "modules.json").is_file()


def _load(model: Any, tokenizer: Any, dtype: str | None, weights: dict):
    from ..loader import load
    from ..tokenizer import load_tokenizer

    if isinstance(model, (str, os.PathLike)):
        from ..checkpoint import resolve
        from ..gguf import find_gguf

        folder = find_gguf(model) or resolve(model)
        loaded = load(folder, dtype=dtype, **weights)
        if tokenizer is None:
            tokenizer = load_tokenizer(folder)
        source = str(model)
    elif hasattr(model, "head_name") and hasattr(model, "config"):
        if tokenizer is None:
            raise LmatlasError("with a loaded model, give its tokenizer too: tokenizer=lmatlas.load_tokenizer(folder)")
        loaded, source = model, "the model given"
    else:
        raise LmatlasError(f"model must be a folder, a hub id or a model from lmatlas.load, not {type(model).__name__}")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer)
    return loaded, tokenizer, source
