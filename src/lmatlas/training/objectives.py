"""The training objective of each landmark paper, as small functions over token ids.

Each objective is two steps: a *preparation* from a batch of token ids to the model's inputs
and labels (the noising, masking or shifting the paper describes; random choices come from an
explicit ``torch.Generator`` so that a run can be resumed exactly), and a *loss* from the
model's outputs and those labels. Losses are returned as sums with the number of items they
sum over, so that the trainer can average over a whole global batch however it is split
across gradient-accumulation steps and processes.

- ``causal_lm``: next-token prediction (GPT).
- ``mask_tokens`` / ``masked_lm_loss``: 15% of tokens chosen, 80% -> [MASK], 10% -> random,
  10% unchanged (BERT); re-drawn every time a sequence is seen (RoBERTa's dynamic masking);
  optionally whole words at once.
- ``replace_tokens`` / ``replaced_token_detection_loss``: a small generator fills the masks,
  a discriminator tells original from replaced tokens (ELECTRA).
- ``distillation_loss`` / ``student_from_teacher``: soft targets at a temperature, MLM and a
  cosine loss on hidden states; the student starts from every other teacher layer
  (DistilBERT).
- ``span_corruption``: noise spans of mean length 3 replaced by ordered sentinels (T5).
- ``text_infilling`` / ``sentence_permutation``: Poisson-length spans each replaced by one
  mask token, sentences shuffled (BART).
- ``instruction_example``: prompt + response, with the loss on the response only (Alpaca).
- ``permutation_lm``: a factorisation order per sequence, its last 1/K predicted by the query
  stream from the tokens before it in the order (XLNet).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import LmatlasError

IGNORE = -100  # label of positions without a loss, as in transformers and PyTorch


# ---------------------------------------------------------------------------------------------
# GPT: causal language modelling
# ---------------------------------------------------------------------------------------------


def causal_lm(ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Inputs are the tokens, labels the same tokens one step ahead.

    ``ids`` is (batch, block + 1): the model reads the first ``block`` tokens and predicts the
    last ``block``. ``labels`` (same shape, IGNORE where no loss is wanted) default to ``ids``.
    """
    labels = ids if labels is None else labels
    return {"input_ids": ids[:, :-1], "labels": labels[:, 1:]}


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the labelled positions, and their number."""
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return loss, int((labels != IGNORE).sum())


# ---------------------------------------------------------------------------------------------
# BERT / RoBERTa: masked language modelling
# ---------------------------------------------------------------------------------------------


def word_groups(word_starts: torch.Tensor) -> torch.Tensor:
    """Word number of each token (counted within each row) from a boolean "starts a word" mask."""
    starts = word_starts.clone()
    starts[:, 0] = True
    return starts.long().cumsum(dim=1) - 1


def mask_tokens(
    ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_mask: torch.Tensor | None = None,
    word_starts: torch.Tensor | None = None,
    probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: (inputs, labels), labels IGNORE where nothing was chosen.

    Each token (or, with ``word_starts``, each whole word: all its pieces together, the later
    "whole word masking" of BERT's release) is chosen with ``probability``; of the chosen,
    ``mask_fraction`` become the mask token, ``random_fraction`` a random token and the rest
    stay as they are, so that the model cannot tell which inputs to trust. Tokens under
    ``special_mask`` ([CLS], [SEP], padding) are never chosen. Drawn anew for every batch: the
    dynamic masking of RoBERTa.
    """
    shape = ids.shape
    if word_starts is None:
        chosen = torch.rand(shape, generator=generator) < probability
    else:
        groups = word_groups(word_starts)
        per_word = torch.rand((shape[0], int(groups.max()) + 1), generator=generator) < probability
        chosen = per_word.gather(1, groups)
    if special_mask is not None:
        chosen &= ~special_mask.bool()
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    inputs = ids.clone()
    # One draw per token decides between [MASK], random and unchanged: 80 / 10 / 10.
    r = torch.rand(shape, generator=generator)
    to_mask = chosen & (r < mask_fraction)
    to_random = chosen & (r >= mask_fraction) & (r < mask_fraction + random_fraction)
    inputs[to_mask] = mask_token_id
    random_ids = torch.randint(vocab_size, shape, generator=generator, dtype=ids.dtype)
    inputs[to_random] = random_ids[to_random]
    return inputs, labels


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    return token_loss(logits, labels)


# ---------------------------------------------------------------------------------------------
# ELECTRA: replaced token detection
# ---------------------------------------------------------------------------------------------


def replace_tokens(
    masked_inputs: torch.Tensor,
    labels: torch.Tensor,
    generator_logits: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's inputs and targets: each masked position takes a token sampled from
    the generator's distribution; the target is 1 where the result differs from the original
    (a sampled token that happens to be the original counts as original, as in the paper)."""
    chosen = labels != IGNORE
    probs = torch.softmax(generator_logits.detach().float()[chosen], dim=-1)
    sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1) if probs.numel() else probs.new_empty(0, dtype=torch.long)
    inputs = torch.where(chosen, labels, masked_inputs)  # the original tokens
    inputs[chosen] = sampled.to(inputs.dtype)
    original = torch.where(chosen, labels, masked_inputs)
    replaced = (inputs != original).float()
    return inputs, replaced


def replaced_token_detection_loss(
    logits: torch.Tensor, replaced: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Summed binary cross-entropy over real (non-padding) tokens, and their number."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), replaced, reduction="none")
    if attention_mask is not None:
        keep = attention_mask.bool()
        return loss[keep].sum(), int(keep.sum())
    return loss.sum(), loss.numel()


# ---------------------------------------------------------------------------------------------
# XLNet: permutation language modelling
# ---------------------------------------------------------------------------------------------


def permutation_lm(ids: torch.Tensor, k: int = 6, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """XLNet's inputs for one batch: the tokens as they are (nothing is masked), a random
    factorisation order per sequence and, of it, the last ``round(length / k)`` tokens (at least
    one) as targets: the paper's partial prediction, K = 6 in its large model.

    ``perm_mask`` (b, t, t) is 1 where position i may not read j: j is a target that does not
    come before i in the order (so no target reads itself, and the context never reads a
    target); ``target_mapping`` (b, n, t) puts prediction m on its target's position (targets in
    position order), ``labels`` (b, n) are the tokens there."""
    if k < 1:
        raise LmatlasError(f"k (the share 1/K of each order that is predicted) must be at least 1, not {k}")
    b, t = ids.shape
    n = min(t, max(1, round(t / k)))
    order = torch.argsort(torch.rand(b, t, generator=generator), dim=1)  # position at each step of the order
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(t).expand(b, t))  # step of each position
    target = rank >= t - n
    perm_mask = (target[:, None, :] & (rank[:, None, :] >= rank[:, :, None])).float()
    positions = torch.sort(torch.where(target, torch.arange(t), t), dim=1).values[:, :n]
    return {"input_ids": ids, "perm_mask": perm_mask, "target_mapping": F.one_hot(positions, t).float(),
            "labels": ids.gather(1, positions)}


# ---------------------------------------------------------------------------------------------
# DistilBERT: knowledge distillation
# ---------------------------------------------------------------------------------------------


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Hinton's soft-target loss: KL(teacher || student) of the distributions softened by the
    temperature, times temperature^2 (so its gradients keep their scale), summed over tokens."""
    if keep is not None:
        student_logits, teacher_logits = student_logits[keep.bool()], teacher_logits[keep.bool()]
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]), reduction="sum")
    return kl * temperature**2, s.reshape(-1, s.shape[-1]).shape[0]


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """DistilBERT's cosine embedding loss: align the directions of the last hidden states."""
    if keep is not None:
        student_hidden, teacher_hidden = student_hidden[keep.bool()], teacher_hidden[keep.bool()]
    s = student_hidden.float().reshape(-1, student_hidden.shape[-1])
    t = teacher_hidden.float().reshape(-1, teacher_hidden.shape[-1])
    return (1 - F.cosine_similarity(s, t, dim=-1)).sum(), s.shape[0]


def every_other_layer(num_layers: int) -> list[int]:
    """The teacher layers a half-depth student starts from: 0, 2, 4, ..."""
    return list(range(0, num_layers, 2))


def student_from_teacher(teacher, layers: Sequence[int] | None = None):
    """A shallower copy of ``teacher`` (an ``LmatlasModel``): the same embeddings and head, and
    the teacher layers named in ``layers`` (default: every other one), as DistilBERT starts."""
    from ..model import LmatlasModel

    cfg = teacher.config
    layers = list(every_other_layer(cfg.num_layers) if layers is None else layers)
    if cfg.cross_layer_sharing:  # ALBERT: no layer is the teacher's own to hand to a student
        raise LmatlasError("a student cannot take layers from a model that shares them across depth (ALBERT)")
    student = LmatlasModel(cfg.replace(num_layers=len(layers), attention_layers=(
        [cfg.attention_layers[i] for i in layers] if cfg.attention_layers else None)), teacher.head_name)
    state = {}
    for name, tensor in teacher.state_dict().items():
        if name.startswith("backbone.layers."):
            i, rest = name[len("backbone.layers."):].split(".", 1)
            if int(i) in layers:
                state[f"backbone.layers.{layers.index(int(i))}.{rest}"] = tensor
        else:
            state[name] = tensor
    student.load_state_dict(state, strict=False)
    student.tie_weights()
    return student


# ---------------------------------------------------------------------------------------------
# T5: span corruption
# ---------------------------------------------------------------------------------------------


def _random_segmentation(num_items: int, num_segments: int, generator: torch.Generator | None) -> torch.Tensor:
    """Split ``num_items`` into ``num_segments`` non-empty parts at random (T5's helper)."""
    first = torch.zeros(num_items, dtype=torch.long)
    if num_segments > 1:
        cuts = torch.randperm(num_items - 1, generator=generator)[: num_segments - 1] + 1
        first[cuts] = 1
    segment = first.cumsum(0)
    return torch.bincount(segment, minlength=num_segments)


def random_spans_noise_mask(
    length: int, noise_density: float = 0.15, mean_span_length: float = 3.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """T5's noise mask: ``round(length * density)`` noisy tokens in spans of mean length
    ``mean_span_length``, alternating with clean spans and starting with a clean one."""
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_span_length), 1)
    num_clean = length - num_noise
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)
    clean_lengths = _random_segmentation(num_clean, num_spans, generator)
    interleaved = torch.stack([clean_lengths, noise_lengths], dim=1).reshape(-1)
    starts = interleaved.cumsum(0)[:-1]
    indicator = torch.zeros(length, dtype=torch.long)
    indicator[starts] = 1
    return indicator.cumsum(0) % 2 == 1


def span_corruption(
    ids: torch.Tensor,
    sentinel_ids: Sequence[int],
    eos_id: int | None,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence -> (inputs, targets) as in T5: each noise span in the input becomes the next
    sentinel (<extra_id_0>, <extra_id_1>, ...); the target lists each sentinel followed by the
    span it hides. Both end with EOS when ``eos_id`` is given."""
    noise = random_spans_noise_mask(len(ids), noise_density, mean_span_length, generator)
    inputs, targets = _replace_spans(ids, noise, sentinel_ids), _replace_spans(ids, ~noise, sentinel_ids)
    if eos_id is not None:
        inputs = torch.cat([inputs, inputs.new_tensor([eos_id])])
        targets = torch.cat([targets, targets.new_tensor([eos_id])])
    return inputs, targets


def _replace_spans(ids: torch.Tensor, mask: torch.Tensor, sentinel_ids: Sequence[int]) -> torch.Tensor:
    out: list[int] = []
    k = 0
    previous = False
    for token, masked in zip(ids.tolist(), mask.tolist()):
        if masked and not previous:
            if k >= len(sentinel_ids):
                raise ValueError(f"more noise spans than the {len(sentinel_ids)} sentinel tokens")
            out.append(sentinel_ids[k])
            k += 1
        elif not masked:
            out.append(token)
        previous = masked
    return ids.new_tensor(out)


# ---------------------------------------------------------------------------------------------
# BART: text infilling and sentence permutation
# ---------------------------------------------------------------------------------------------


def text_infilling(
    ids: torch.Tensor,
    mask_token_id: int,
    mask_ratio: float = 0.3,
    poisson_lambda: float = 3.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """BART's text infilling on one sequence: (noised ids, span lengths).

    ``round(mask_ratio * length)`` tokens are hidden, in spans whose lengths are drawn from
    Poisson(``poisson_lambda``); each span, whatever its length (zero too: an insertion), is
    replaced by a single mask token, so the model must also work out how many tokens are
    missing. Spans never touch, so each mask stands for exactly one span.
    """
    n = len(ids)
    target = round(mask_ratio * n)
    lengths: list[int] = []
    total = 0
    rate = torch.tensor([poisson_lambda])
    while total < target:
        length = int(torch.poisson(rate, generator=generator).item())
        lengths.append(length)
        total += length
    if lengths:
        lengths[-1] -= total - target
    k = len(lengths)
    if k == 0:
        return ids.clone(), []
    clean = n - target
    if clean < k - 1:  # too short for that many separated spans: one span holds them all
        lengths, k = [target], 1
    # Clean tokens go into k + 1 gaps; the k - 1 inner gaps are non-empty so masks never merge.
    inner = k - 1
    free = clean - inner
    cuts = torch.sort(torch.randint(free + 1, (k,), generator=generator)).values.tolist()
    bounds = [0, *cuts, free]
    gaps = [bounds[i + 1] - bounds[i] + (1 if 0 < i < k else 0) for i in range(k + 1)]
    order = torch.randperm(k, generator=generator).tolist()
    lengths = [lengths[i] for i in order]
    out: list[int] = []
    src = ids.tolist()
    pos = 0
    for i in range(k):
        out.extend(src[pos : pos + gaps[i]])
        pos += gaps[i]
        out.append(mask_token_id)
        pos += lengths[i]
    out.extend(src[pos : pos + gaps[k]])
    return ids.new_tensor(out), lengths


def sentence_permutation(sentences: Sequence[Sequence[int]], generator: torch.Generator | None = None) -> list[int]:
    """BART's sentence permutation: the document's sentences, shuffled, concatenated."""
    order = torch.randperm(len(sentences), generator=generator).tolist()
    return [t for i in order for t in sentences[i]]


def split_sentences(ids: Sequence[int], ends: set[int]) -> list[list[int]]:
    """Sentences of a token sequence, each ending after a token of ``ends`` (full stops...)."""
    out: list[list[int]] = [[]]
    for t in ids:
        out[-1].append(t)
        if t in ends:
            out.append([])
    return [s for s in out if s]


# ---------------------------------------------------------------------------------------------
# Alpaca: instruction tuning
# ---------------------------------------------------------------------------------------------

# The prompts of Stanford Alpaca (Taori et al., 2023), train.py's PROMPT_DICT.
ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)


def alpaca_prompt(instruction: str, input: str = "") -> str:
    if input:
        return ALPACA_PROMPT.format(instruction=instruction, input=input)
    return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)


def instruction_example(
    prompt_ids: Sequence[int], response_ids: Sequence[int], max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """(ids, labels) of one example: the prompt is read but not learned (labels IGNORE), the
    response (ending with EOS) is learned. Truncated on the right to ``max_length``."""
    ids = list(prompt_ids) + list(response_ids)
    labels = [IGNORE] * len(prompt_ids) + list(response_ids)
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


__all__ = [
    "ALPACA_PROMPT",
    "ALPACA_PROMPT_NO_INPUT",
    "IGNORE",
    "alpaca_prompt",
    "causal_lm",
    "cosine_loss",
    "distillation_loss",
    "every_other_layer",
    "instruction_example",
    "mask_tokens",
    "masked_lm_loss",
    "random_spans_noise_mask",
    "replace_tokens",
    "replaced_token_detection_loss",
    "sentence_permutation",
    "span_corruption",
    "split_sentences",
    "student_from_teacher",
    "text_infilling",
    "token_loss",
]
