"""Fine-tuning tasks: sentence classification, NER and extractive question answering.

Each reads the usual files (TSV/CSV/JSON Lines with named columns; CoNLL; SQuAD JSON), puts
the task's head on a pretrained model (a new one, sized to the training labels, unless the
checkpoint already has it), and reports the metric people quote: accuracy (and F1), entity F1,
exact match and F1. Sentence classification also takes a decoder (GPT-2, Llama...), which reads
each text at its last token.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import LmatlasError
from ..model import LmatlasModel
from . import metrics as M
from .data import EpochSampler, column, rank_slice
from .distributed import Context
from .objectives import IGNORE
from .init import init_weights
from .tasks.base import EVAL_BATCH, DataPosition, ModelTask
from .tasks.seq2seq import seq2seq_batch, seq2seq_loss



# ---------------------------------------------------------------------------------------------
# Models and batches
# ---------------------------------------------------------------------------------------------


def load_for_finetuning(path: str | os.PathLike, head: str, id2label: dict[int, str] | None = None) -> LmatlasModel:
    """A pretrained model with ``head``; a new head (randomly initialised, as transformers
    does) when the checkpoint has none, or one for other labels. Decoders (GPT-2, Llama...)
    serve sentence classification only, read at each text's last token."""
    from ..heads import HEADS
    from ..loader import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "newly initialised: head.out..." is the point here
        model = load(path, head=head, dequantize=True)
    if getattr(model, "decodes_with_memory", False):
        # Its summary and heads read the last position, and fine-tuning pads on the right.
        raise LmatlasError(f"{path} is an XLNet, which fine-tuning does not take yet (its heads read the last "
                           "position, and fine-tuning pads on the right)")
    if model.is_decoder and head != "sequence-classification":
        raise LmatlasError(f"{path} is a decoder; fine-tune an encoder (BERT, RoBERTa, ELECTRA...) for {head}")
    if model.is_encoder_decoder != (head == "seq2seq-lm"):
        kind = "an encoder-decoder (T5, BART...)" if head == "seq2seq-lm" else "an encoder (BERT, RoBERTa...)"
        raise LmatlasError(f"{path} is not {kind}, which {head} fine-tuning needs")
    if id2label is not None and model.config.id2label != id2label:
        cfg = model.config.replace(id2label=dict(id2label))
        new = HEADS[head](cfg)
        init_weights(new)
        old = model.head.state_dict()
        # Keep what does not depend on the labels (RoBERTa's dense layer over <s>).
        keep = {k: v for k, v in old.items() if k in new.state_dict() and new.state_dict()[k].shape == v.shape
                and not k.startswith("out.")}
        new.load_state_dict(keep, strict=False)
        model.head = new
        model.config = cfg
        model.backbone.config = cfg
    return model.train()


def use_pad_token(model: LmatlasModel, tokenizer) -> int:
    """The pad token of a decoder classifier, which reads each row at its last token that is not
    padding: the config's, else the tokenizer's pad or end-of-text token (GPT-2 and Llama have
    no pad token), then written into the config so that the saved model reads rows the same way."""
    pad = model.config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise LmatlasError(
                "the model and its tokenizer have no pad or end-of-text token, which marks where a decoder "
                "classifier reads each padded text"
            )
        model.config = model.config.replace(pad_token_id=pad)
        model.backbone.config = model.config
    return pad


def pad(rows: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and token_type_ids (when given) of examples."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long) if rows[0].get("token_type_ids") is not None else None
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        if types is not None:
            types[i, :n] = torch.tensor(r["token_type_ids"])
    out = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        out["token_type_ids"] = types
    return out


def _forward(module, batch, device):
    kwargs = {"attention_mask": batch["attention_mask"].to(device)}
    if "token_type_ids" in batch:
        kwargs["token_type_ids"] = batch["token_type_ids"].to(device)
    return module(batch["input_ids"].to(device), **kwargs)


def uses_token_types(model: LmatlasModel) -> bool:
    return model.config.type_vocab_size > 0 and not model.is_decoder


class FinetuneTask(DataPosition, ModelTask):
    """Examples walked in shuffled epochs, padded per batch; the dev examples sorted by length
    (fewer pad tokens per batch) unless the task reads them in their order."""

    sort_dev = True

    def __init__(self, model, tokenizer, tokenizer_dir, train: list[dict], dev: list[dict] | None, seed: int,
                 group_by_length: bool = True):
        super().__init__(model, tokenizer_dir)
        self.train_rows = train
        self.dev = sorted(dev or [], key=lambda r: len(r["input_ids"])) if self.sort_dev else list(dev or [])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        lengths = [len(r["input_ids"]) for r in train] if group_by_length else None
        self.sampler = EpochSampler(len(train), seed, lengths=lengths)

    def rows(self, batch_size: int, ctx: Context) -> list[dict]:
        index = rank_slice(self.sampler.draw(batch_size * ctx.world), ctx.rank, ctx.world)
        return [self.train_rows[i] for i in index]

    def signature(self):
        return {**super().signature(), "labels": {str(k): v for k, v in self.module.config.id2label.items()}}


# ---------------------------------------------------------------------------------------------
# Sentence (pair) classification
# ---------------------------------------------------------------------------------------------


def label_set(values: Sequence[Any]) -> dict[int, str]:
    """id2label from the training labels: numbers in numeric order, names alphabetically."""
    names = sorted({str(v).strip() for v in values})
    try:
        names = sorted(names, key=float)
    except ValueError:
        pass
    return dict(enumerate(names))


def classification_examples(tokenizer, rows, path, text: str, pair: str | None, label: str,
                            label2id: dict[str, int], max_length: int, with_types: bool) -> list[dict]:
    texts = [str(t) for t in column(rows, text, path, "text_column")]
    pairs = [str(t) for t in column(rows, pair, path, "text_pair_column")] if pair else None
    labels = [str(v).strip() for v in column(rows, label, path, "label_column")]
    for n, y in enumerate(labels):
        if y not in label2id:
            raise LmatlasError(
                f"{path}, row {n + 1}: label {y!r} is not one of the training labels ({', '.join(label2id)})"
            )
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    out = []
    for i in range(len(texts)):
        ex = {"input_ids": enc["input_ids"][i], "label": label2id[labels[i]]}
        if with_types and "token_type_ids" in enc:
            ex["token_type_ids"] = enc["token_type_ids"][i]
        out.append(ex)
    return out


class ClassifyTask(FinetuneTask):
    name = "classify"
    metric = "accuracy"

    def __init__(self, model, tokenizer, tokenizer_dir, train, dev, seed):
        super().__init__(model, tokenizer, tokenizer_dir, train, dev, seed)
        if model.is_decoder:  # its padding must be the pad token the head looks for
            self.pad_id = use_pad_token(model, tokenizer)

    def next_batch(self, batch_size, ctx):
        rows = self.rows(batch_size, ctx)
        batch = pad(rows, self.pad_id)
        batch["labels"] = torch.tensor([r["label"] for r in rows])
        batch["counts"] = {"loss": len(rows)}
        return batch

    def loss_terms(self, module, batch):
        logits = _forward(module, batch, batch["input_ids"].device).logits
        return {"loss": nn.functional.cross_entropy(logits.float(), batch["labels"], reduction="sum")}

    def predict(self, module, rows, device) -> tuple[list[int], float]:
        predictions, loss = [], 0.0
        for i in range(0, len(rows), EVAL_BATCH):
            chunk = rows[i : i + EVAL_BATCH]
            logits = _forward(module, pad(chunk, self.pad_id), device).logits.float()
            labels = torch.tensor([r["label"] for r in chunk], device=logits.device)
            loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            predictions += logits.argmax(-1).tolist()
        return predictions, loss / max(len(rows), 1)

    def evaluate(self, module, ctx):
        if not self.dev:
            return {}
        predictions, loss = self.predict(module, self.dev, ctx.device)
        gold = [r["label"] for r in self.dev]
        n = module.config.num_labels
        return {"loss": loss, "accuracy": M.accuracy(predictions, gold), "f1": M.f1(predictions, gold, n)}


# ---------------------------------------------------------------------------------------------
# Named entity recognition
# ---------------------------------------------------------------------------------------------


def _framing(tokenizer) -> tuple[list[int], list[int]]:
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return ([first] if first is not None else []), ([last] if last is not None else [])


def ner_examples(tokenizer, sentences, path, label2id: dict[str, int], max_length: int) -> list[dict]:
    """Each word tokenised on its own (so pieces never cross words); the first piece of a word
    carries its tag, the others are ignored, as in transformers' token-classification example."""
    words = [w for ws, _ in sentences for w in ws]
    # A space before each word: byte-level BPE marks word starts with it; WordPiece drops it.
    pieces = tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
    head, tail = _framing(tokenizer)
    room = max_length - len(head) - len(tail)
    out, k = [], 0
    for s, (ws, tags) in enumerate(sentences):
        ids, labels, first = list(head), [IGNORE] * len(head), []
        for w, tag in zip(ws, tags):
            if tag not in label2id:
                raise LmatlasError(
                    f"{path}, sentence {s + 1}: tag {tag!r} is not one of the training tags ({', '.join(label2id)})"
                )
            p = pieces[k] or ([tokenizer.unk_token_id] if tokenizer.unk_token_id is not None else [])
            k += 1
            if len(ids) - len(head) + len(p) > room:
                continue  # past the length limit: the word is not scored
            first.append(len(ids))
            ids += p
            labels += [label2id[tag]] + [IGNORE] * (len(p) - 1)
        ids += tail
        labels += [IGNORE] * len(tail)
        out.append({"input_ids": ids, "labels": labels, "tags": list(tags), "first": first,
                    "token_type_ids": [0] * len(ids)})
    return out


class NERTask(FinetuneTask):
    name = "ner"
    metric = "f1"
    sort_dev = False

    @staticmethod
    def _labels(rows, width):
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
        return labels

    def next_batch(self, batch_size, ctx):
        rows = self.rows(batch_size, ctx)
        batch = pad(rows, self.pad_id)
        batch["labels"] = self._labels(rows, batch["input_ids"].shape[1])
        batch["counts"] = {"loss": int((batch["labels"] != IGNORE).sum())}
        return batch

    def loss_terms(self, module, batch):
        logits = _forward(module, batch, batch["input_ids"].device).logits.float()
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                                           ignore_index=IGNORE, reduction="sum")
        return {"loss": loss}

    def evaluate(self, module, ctx):
        if not self.dev:
            return {}
        id2label = module.config.id2label
        predicted, gold = [], []
        for i in range(0, len(self.dev), EVAL_BATCH):
            chunk = self.dev[i : i + EVAL_BATCH]
            best = _forward(module, pad(chunk, self.pad_id), ctx.device).logits.argmax(-1).tolist()
            for r, row in zip(chunk, best):
                tags = [id2label[row[j]] for j in r["first"]]
                predicted.append(tags + ["O"] * (len(r["tags"]) - len(tags)))
                gold.append(r["tags"])
        scores = M.entity_scores(predicted, gold)
        correct = sum(p == g for ps, gs in zip(predicted, gold) for p, g in zip(ps, gs))
        scores["accuracy"] = correct / max(sum(len(g) for g in gold), 1)
        return scores


# ---------------------------------------------------------------------------------------------
# Extractive question answering (SQuAD)
# ---------------------------------------------------------------------------------------------


def qa_features(tokenizer, questions, max_length: int = 384, stride: int = 128, train: bool = True) -> list[dict]:
    """Question + context windows (long contexts overlap by ``stride`` tokens), with the answer's
    start and end token, or the first token when the answer is not inside the window — the
    features of transformers' run_qa example."""
    if tokenizer.padding_side != "right":
        raise LmatlasError("question answering expects a tokenizer that pads on the right")
    enc = tokenizer([q["question"].lstrip() for q in questions], [q["context"] for q in questions],
                    truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    features = []
    for i, ids in enumerate(enc["input_ids"]):
        q = questions[enc["overflow_to_sample_mapping"][i]]
        seq = enc.sequence_ids(i)
        offsets = [o if seq[j] == 1 else None for j, o in enumerate(enc["offset_mapping"][i])]
        feature = {"input_ids": ids, "example": q["id"], "offsets": offsets}
        if "token_type_ids" in enc:
            feature["token_type_ids"] = enc["token_type_ids"][i]
        start = end = 0
        answers = q["answers"]
        if answers["text"]:
            a0 = answers["answer_start"][0]
            a1 = a0 + len(answers["text"][0])
            ctx = [j for j, s in enumerate(seq) if s == 1]
            if ctx and offsets[ctx[0]][0] <= a0 and offsets[ctx[-1]][1] >= a1:
                start = next(j for j in ctx if offsets[j][1] > a0)
                end = next(j for j in reversed(ctx) if offsets[j][0] < a1)
        feature["start"], feature["end"] = start, end
        features.append(feature)
    return features


def best_answers(features, start_logits, end_logits, contexts, n_best: int = 20, max_answer: int = 30,
                 allow_null: bool = False) -> dict[str, str]:
    """Each question's best span over its windows (end after start, at most ``max_answer``
    tokens, inside the context); "" when no answer beats the null score (SQuAD 2.0)."""
    best: dict[str, tuple[float, str]] = {}
    null: dict[str, float] = {}
    for f, s, e in zip(features, start_logits, end_logits):
        qid, offsets = f["example"], f["offsets"]
        null_score = s[0] + e[0]
        null[qid] = min(null.get(qid, null_score), null_score)
        starts = sorted(range(len(s)), key=lambda j: -s[j])[:n_best]
        ends = sorted(range(len(e)), key=lambda j: -e[j])[:n_best]
        for a in starts:
            for b in ends:
                if offsets[a] is None or offsets[b] is None or b < a or b - a + 1 > max_answer:
                    continue
                score = s[a] + e[b]
                if qid not in best or score > best[qid][0]:
                    best[qid] = (score, contexts[qid][offsets[a][0] : offsets[b][1]])
    out = {}
    for qid in null:
        if qid in best and (not allow_null or best[qid][0] > null[qid]):
            out[qid] = best[qid][1]
        else:
            out[qid] = ""
    return out


class QATask(FinetuneTask):
    name = "qa"
    metric = "f1"

    def __init__(self, model, tokenizer, tokenizer_dir, train_features, dev_questions, dev_features, seed,
                 allow_null: bool = False):
        super().__init__(model, tokenizer, tokenizer_dir, train_features, None, seed)
        self.dev_questions = {q["id"]: q for q in dev_questions or []}
        self.dev_features = dev_features or []
        self.allow_null = allow_null

    def next_batch(self, batch_size, ctx):
        rows = self.rows(batch_size, ctx)
        batch = pad(rows, self.pad_id)
        batch["start"] = torch.tensor([r["start"] for r in rows])
        batch["end"] = torch.tensor([r["end"] for r in rows])
        batch["counts"] = {"loss": len(rows)}
        return batch

    def loss_terms(self, module, batch):
        out = _forward(module, batch, batch["input_ids"].device)
        ce = nn.functional.cross_entropy
        loss = (ce(out.start_logits.float(), batch["start"], reduction="sum")
                + ce(out.end_logits.float(), batch["end"], reduction="sum")) / 2
        return {"loss": loss}

    def evaluate(self, module, ctx):
        if not self.dev_features:
            return {}
        starts, ends = [], []
        for i in range(0, len(self.dev_features), EVAL_BATCH // 2):
            chunk = self.dev_features[i : i + EVAL_BATCH // 2]
            batch = pad(chunk, self.pad_id)
            out = _forward(module, batch, ctx.device)
            mask = batch["attention_mask"].to(ctx.device).bool()
            s = out.start_logits.float().masked_fill(~mask, -1e4)
            e = out.end_logits.float().masked_fill(~mask, -1e4)
            starts += s.tolist()
            ends += e.tolist()
        contexts = {k: q["context"] for k, q in self.dev_questions.items()}
        answers = best_answers(self.dev_features, starts, ends, contexts, allow_null=self.allow_null)
        em = [M.exact_match(answers[k], q["answers"]["text"]) for k, q in self.dev_questions.items()]
        f1 = [M.token_f1(answers[k], q["answers"]["text"]) for k, q in self.dev_questions.items()]
        return {"exact_match": 100 * sum(em) / len(em), "f1": 100 * sum(f1) / len(f1)}


# ---------------------------------------------------------------------------------------------
# Sequence to sequence (summarisation, translation): an encoder-decoder
# ---------------------------------------------------------------------------------------------


def seq2seq_examples(tokenizer, rows, path, source: str, target: str, prefix: str, max_length: int,
                     max_target_length: int) -> list[dict]:
    sources = [prefix + str(t) for t in column(rows, source, path, "source_column")]
    targets = [str(t) for t in column(rows, target, path, "target_column")]
    src = tokenizer(sources, truncation=True, max_length=max_length)["input_ids"]
    tgt = tokenizer(targets, truncation=True, max_length=max_target_length)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is None:
        raise LmatlasError(f"the tokenizer {tokenizer.name_or_path} has no end-of-sequence token, which ends each target")
    tgt = [t if t and t[-1] == eos else t + [eos] for t in tgt]  # the model must learn where to stop
    return [{"input_ids": s, "labels": t, "target": y} for s, t, y in zip(src, tgt, targets)]


class Seq2SeqTask(FinetuneTask):
    """Teacher forcing on (source, target) pairs; evaluated on the loss and on ROUGE-L of the
    greedy (or beam) outputs."""

    name = "seq2seq"
    metric = "rougeL"

    def __init__(self, model, tokenizer, tokenizer_dir, train, dev, seed, max_new_tokens: int = 64,
                 num_beams: int = 1):
        super().__init__(model, tokenizer, tokenizer_dir, train, dev, seed)
        self.tokenizer = tokenizer
        self.start = model.config.decoder_start_token_id
        if self.start is None:
            raise LmatlasError("the model's config.json has no decoder_start_token_id")
        self.max_new_tokens, self.num_beams = max_new_tokens, num_beams

    def _batch(self, rows):
        return seq2seq_batch([r["input_ids"] for r in rows], [r["labels"] for r in rows], self.pad_id, self.start)

    def next_batch(self, batch_size, ctx):
        batch = self._batch(self.rows(batch_size, ctx))
        batch["counts"] = {"loss": int((batch["labels"] != IGNORE).sum())}
        return batch

    def loss_terms(self, module, batch):
        return {"loss": seq2seq_loss(module, batch)}

    def evaluate(self, module, ctx):
        if not self.dev:
            return {}
        total, count, scores = 0.0, 0, []
        for i in range(0, len(self.dev), EVAL_BATCH // 2):
            chunk = self.dev[i : i + EVAL_BATCH // 2]
            batch = {k: v.to(ctx.device) for k, v in self._batch(chunk).items()}
            total += float(seq2seq_loss(module, batch))
            count += int((batch["labels"] != IGNORE).sum())
            out = module.generate(batch["input_ids"], attention_mask=batch["attention_mask"],
                                  max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
            texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
            scores += [M.rouge_l(p, r["target"]) for p, r in zip(texts, chunk)]
        return {"loss": total / max(count, 1), "rougeL": 100 * sum(scores) / len(scores)}


__all__ = [
    "ClassifyTask",
    "Seq2SeqTask",
    "seq2seq_examples",
    "NERTask",
    "QATask",
    "best_answers",
    "classification_examples",
    "label_set",
    "load_for_finetuning",
    "ner_examples",
    "pad",
    "qa_features",
    "use_pad_token",
]
