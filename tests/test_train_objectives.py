"""Each paper's noising and masking, checked on its statistics over many draws."""

from __future__ import annotations

import math

import pytest
import torch

from lmatlas.config import ModelConfig
from lmatlas.model import LmatlasModel
from lmatlas.training import objectives as obj

VOCAB, MASK = 1000, 3


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_causal_lm_predicts_the_next_token():
    ids = torch.arange(10).reshape(2, 5)
    batch = obj.causal_lm(ids)
    assert torch.equal(batch["input_ids"], ids[:, :-1])
    assert torch.equal(batch["labels"], ids[:, 1:])


def test_bert_masking_chooses_15_percent_and_splits_80_10_10():
    ids = torch.randint(10, VOCAB, (400, 128), generator=_gen(1))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    inputs, labels = obj.mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, special_mask=special, generator=_gen(2))
    chosen = labels != obj.IGNORE
    assert not chosen[special].any()  # [CLS] and [SEP] are never chosen
    assert torch.equal(labels[chosen], ids[chosen])
    rate = chosen.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.005
    masked = (inputs == MASK) & chosen
    unchanged = (inputs == ids) & chosen & ~masked
    replaced = chosen & ~masked & ~unchanged
    n = chosen.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # A random token can be the original one (1 time in VOCAB): counted as unchanged.
    assert abs(replaced.sum().item() / n - 0.1) < 0.01
    assert abs(unchanged.sum().item() / n - 0.1) < 0.01
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_masking_is_dynamic_and_reproducible():
    ids = torch.randint(10, VOCAB, (8, 64), generator=_gen(0))
    g = _gen(5)
    a = obj.mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, generator=g)[1]
    b = obj.mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, generator=g)[1]
    assert not torch.equal(a, b)  # RoBERTa: a new mask each time the sequence is seen
    c = obj.mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, generator=_gen(5))[1]
    assert torch.equal(a, c)


def test_whole_word_masking_takes_all_pieces_of_a_word():
    ids = torch.randint(10, VOCAB, (300, 96), generator=_gen(3))
    # Words of one to four pieces.
    starts = torch.rand(ids.shape, generator=_gen(4)) < 0.4
    starts[:, 0] = True
    _, labels = obj.mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, word_starts=starts, generator=_gen(6))
    chosen = labels != obj.IGNORE
    words = obj.word_groups(starts)
    for row in range(20):
        for w in words[row].unique():
            pieces = chosen[row][words[row] == w]
            assert pieces.all() or not pieces.any()
    n_words = sum(int(words[r].max()) + 1 for r in range(ids.shape[0]))
    chosen_words = sum(len(words[r][chosen[r]].unique()) for r in range(ids.shape[0]))
    assert abs(chosen_words / n_words - 0.15) < 0.01


def test_electra_replaces_masked_tokens_with_generator_samples():
    ids = torch.randint(10, 50, (64, 32), generator=_gen(0))
    masked, labels = obj.mask_tokens(ids, mask_token_id=MASK, vocab_size=50, generator=_gen(1))
    # A generator sure of the original token at half the positions, uniform elsewhere.
    logits = torch.zeros(64, 32, 50)
    sure = torch.rand(64, 32, generator=_gen(2)) < 0.5
    logits[sure] = torch.nn.functional.one_hot(ids[sure], 50).float() * 100
    inputs, replaced = obj.replace_tokens(masked, labels, logits, generator=_gen(3))
    chosen = labels != obj.IGNORE
    assert torch.equal(inputs[~chosen], ids[~chosen])  # unmasked tokens are the originals
    assert not replaced[~chosen].any()
    assert not replaced[chosen & sure].any()  # sampled the original: counts as original
    frac = replaced[chosen & ~sure].mean().item()
    assert abs(frac - 49 / 50) < 0.03
    assert torch.equal(replaced.bool(), inputs != ids)


def test_rtd_loss_is_summed_over_real_tokens():
    logits = torch.zeros(2, 4)
    target = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    loss, n = obj.replaced_token_detection_loss(logits, target, mask)
    assert n == 6 and math.isclose(loss.item(), 6 * math.log(2), rel_tol=1e-6)


def _tiny_encoder(layers=4):
    cfg = ModelConfig(model_type="bert", vocab_size=50, hidden_size=16, num_layers=layers, num_heads=2,
                      intermediate_size=32, max_positions=16, type_vocab_size=2, hidden_dropout=0.0,
                      attention_dropout=0.0)
    return LmatlasModel(cfg, "masked-lm").eval()


def test_distillation_losses_vanish_when_student_equals_teacher():
    t = torch.randn(3, 5, 50)
    kl, n = obj.distillation_loss(t, t, temperature=2.0)
    assert n == 15 and abs(kl.item()) < 1e-4
    h = torch.randn(3, 5, 8)
    cos, m = obj.cosine_loss(h, 2 * h)
    assert m == 15 and abs(cos.item()) < 1e-4
    # Temperature softens: a higher one gives a smaller KL before the T^2 factor.
    s = torch.randn(3, 5, 50)
    k1 = obj.distillation_loss(s, t, 1.0)[0]
    k4 = obj.distillation_loss(s, t, 4.0)[0] / 16
    assert k4 < k1


def test_student_starts_from_every_other_teacher_layer():
    teacher = _tiny_encoder(layers=5)
    student = obj.student_from_teacher(teacher)
    assert student.config.num_layers == 3
    for i, j in enumerate([0, 2, 4]):
        for (n1, p1), (n2, p2) in zip(student.backbone.layers[i].named_parameters(),
                                      teacher.backbone.layers[j].named_parameters()):
            assert torch.equal(p1, p2), n1
    assert torch.equal(student.backbone.embeddings.tokens.weight, teacher.backbone.embeddings.tokens.weight)
    assert student.head.decoder.weight is student.backbone.embeddings.tokens.weight  # still tied
    ids = torch.randint(50, (2, 7))
    assert student(ids).logits.shape == (2, 7, 50)


def test_t5_span_corruption_statistics():
    n, length = 400, 200
    sentinels = list(range(999, 899, -1))  # <extra_id_0> is the last id, counting down
    noise_total = spans = 0
    span_lengths = []
    g = _gen(7)
    for _ in range(n):
        ids = torch.randint(0, 800, (length,), generator=g)
        mask = obj.random_spans_noise_mask(length, 0.15, 3.0, generator=g)
        noise_total += int(mask.sum())
        # spans: runs of True
        runs = torch.diff(torch.cat([torch.tensor([0]), mask.long(), torch.tensor([0])]))
        starts, ends = (runs == 1).nonzero().flatten(), (runs == -1).nonzero().flatten()
        span_lengths += (ends - starts).tolist()
        spans += len(starts)
        assert not mask[0]  # T5 starts with a clean span
        inputs, targets = obj.span_corruption(ids, sentinels, eos_id=1, generator=_gen(len(span_lengths)))
        assert inputs[-1] == 1 and targets[-1] == 1
        # Sentinels appear in order, the same ones in inputs and targets.
        s_in = [t for t in inputs.tolist() if t in sentinels]
        s_out = [t for t in targets.tolist() if t in sentinels]
        assert s_in == sentinels[: len(s_in)] and s_out == s_in
        # Inputs + targets give back the text.
        pieces, cur = {}, None
        for t in targets[:-1].tolist():
            if t in sentinels:
                cur = t
                pieces[cur] = []
            else:
                pieces[cur].append(t)
        rebuilt = []
        for t in inputs[:-1].tolist():
            rebuilt.extend(pieces[t] if t in sentinels else [t])
        assert rebuilt == ids.tolist()
    assert noise_total / (n * length) == pytest.approx(0.15, abs=1e-3)
    assert sum(span_lengths) / len(span_lengths) == pytest.approx(3.0, abs=0.05)


def test_bart_text_infilling_statistics():
    g = _gen(11)
    lengths_all = []
    for _ in range(300):
        ids = torch.randint(10, 800, (100,), generator=g)
        noised, lengths = obj.text_infilling(ids, MASK, 0.3, 3.0, generator=g)
        assert sum(lengths) == 30  # 30% of the tokens hidden
        assert int((noised == MASK).sum()) == len(lengths)  # one mask per span, zero-length ones too
        assert len(noised) == 100 - 30 + len(lengths)
        # What is left is the text minus the spans, in order.
        kept = noised[noised != MASK].tolist()
        it = iter(ids.tolist())
        assert all(any(t == u for u in it) for t in kept)
        lengths_all += lengths
    mean = sum(lengths_all) / len(lengths_all)
    assert mean == pytest.approx(3.0, abs=0.25)  # Poisson(3), the last span of each text trimmed
    zero = sum(1 for x in lengths_all if x == 0) / len(lengths_all)
    assert zero == pytest.approx(math.exp(-3), abs=0.02)


def test_bart_sentence_permutation_shuffles_whole_sentences():
    full_stop = 5
    ids = [10, 11, full_stop, 12, full_stop, 13, 14, 15, full_stop, 16, full_stop]
    sentences = obj.split_sentences(ids, {full_stop})
    assert sentences == [[10, 11, 5], [12, 5], [13, 14, 15, 5], [16, 5]]
    seen = set()
    for seed in range(40):
        out = obj.sentence_permutation(sentences, generator=_gen(seed))
        assert sorted(out) == sorted(ids)
        assert sorted(map(tuple, obj.split_sentences(out, {full_stop}))) == sorted(map(tuple, sentences))
        seen.add(tuple(out))
    assert len(seen) > 10


def test_alpaca_loss_is_on_the_response_only():
    prompt = obj.alpaca_prompt("Add the numbers.", "2 and 3")
    assert prompt.endswith("### Input:\n2 and 3\n\n### Response:")
    assert "### Input" not in obj.alpaca_prompt("Say hi.")
    ids, labels = obj.instruction_example([1, 2, 3, 4], [7, 8, 2])
    assert ids == [1, 2, 3, 4, 7, 8, 2]
    assert labels == [obj.IGNORE] * 4 + [7, 8, 2]
    batch = obj.causal_lm(torch.tensor([ids]), torch.tensor([labels]))
    # The first learned position predicts the response's first token from the prompt's end.
    assert batch["labels"][0].tolist() == [obj.IGNORE] * 3 + [7, 8, 2]


def test_ernie_masks_whole_phrases_and_entities():
    """ERNIE's knowledge masking: a listed phrase or entity is chosen whole or not at all, like a
    word's pieces under whole-word masking; unlisted words stay units of their own."""
    from lmatlas.embeddings import default_model_path
    from lmatlas.tokenizer import load_tokenizer
    from lmatlas.training.data import PhraseUnits, tokenize_stream

    tok = load_tokenizer(default_model_path())
    phrases = ["Duke of York", "king richard", "Westminster Abbey", "York"]
    text = ("The Duke of York came to Westminster Abbey, where King Richard waited.\n"
            "York said nothing; the duke of york's men stood by the king.\n") * 40
    units = PhraseUnits(tok, phrases)
    assert units.longest == 3  # "York" alone is a word already, not a phrase
    stream = tokenize_stream(tok, [text], units=units)
    plain = tokenize_stream(tok, [text])
    assert torch.equal(stream.ids, plain.ids)
    # Each phrase occurrence merges its words into one unit: fewer starts than words.
    per_copy = int(plain.word_starts.sum() - stream.word_starts.sum()) // 40
    assert per_copy == 2 + 1 + 1 + 2  # the later words of: duke of york, westminster abbey, king richard, duke of york
    ids, starts = stream.ids[None, :], stream.word_starts[None, :]
    _, labels = obj.mask_tokens(ids, mask_token_id=MASK, vocab_size=tok.vocab_size, word_starts=starts,
                                generator=_gen(7), probability=0.3)
    chosen = (labels != obj.IGNORE)[0]
    pieces = tok.convert_ids_to_tokens(stream.ids.tolist())
    seen = 0
    for i in range(len(pieces) - 2):
        if pieces[i : i + 3] == ["duke", "of", "york"]:
            assert chosen[i : i + 3].all() or not chosen[i : i + 3].any()
            seen += int(chosen[i])
    assert 0 < seen < 80  # some occurrences chosen, whole, and not all of them


def test_ernie_phrase_list_must_hold_a_phrase(tmp_path):
    from lmatlas.errors import LmatlasError
    from lmatlas.training.recipes import MaskedLMRecipe
    from lmatlas.embeddings import default_model_path
    from lmatlas.tokenizer import load_tokenizer

    words = tmp_path / "entities.txt"
    words.write_text("York\nRichard\n")
    recipe = MaskedLMRecipe(model="ernie-3.0-base", data=[str(words)], phrases=str(words))
    with pytest.raises(LmatlasError, match="no phrase of two words"):
        recipe._units(load_tokenizer(default_model_path()))
