"""Encoder-decoders through the one generation engine, token for token against transformers.

Greedy and beam search (3 beams, with several returned sequences, length penalties and each
early_stopping mode) on right-padded source batches; the logits processors encoder-decoders
bring (forced BOS for mBART's target language, forced EOS, bad words); generation defaults
from generation_config.json or, without one, config.json; bad arguments.

transformers 4.57 cannot cache a T5 whose decoder is deeper than its encoder (its cache is sized
by num_layers), so its reference runs without a cache there: same tokens, more time.
"""

from __future__ import annotations

import pytest
import torch

import lmatlas
from lmatlas.cache import Seq2SeqCache

from .reference import transformers
from .test_parity_seq2seq import (  # noqa: F401  (the fixture)
    VARIANTS,
    VOCAB,
    build_reference,
    padded_sources,
    pad_id,
    saved_seq2seq,
)

pytestmark = pytest.mark.usefixtures("one_thread")


ALL = list(VARIANTS)


def hf_generate(ref, ids, mask, **kw):
    if ref.config.model_type == "t5" and ref.config.num_decoder_layers != ref.config.num_layers:
        kw.setdefault("use_cache", False)
    with torch.no_grad():
        return ref.generate(input_ids=ids, attention_mask=mask, **kw)


def assert_same(got, expected, what):
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(expected.shape)}\n{got}\n{expected}"
    assert torch.equal(got, expected), f"{what}:\n{got}\n{expected}"


@pytest.mark.parametrize("variant", ALL)
def test_greedy(variant, saved_seq2seq):
    ref, ours = saved_seq2seq(variant)
    ids, mask = padded_sources(variant)
    kw = dict(max_new_tokens=8)
    assert_same(ours.generate(ids, mask, **kw), hf_generate(ref, ids, mask, **kw), f"{variant} greedy")


@pytest.mark.parametrize("variant", ALL)
def test_beam_search(variant, saved_seq2seq):
    ref, ours = saved_seq2seq(variant)
    ids, mask = padded_sources(variant)
    kw = dict(max_new_tokens=7, num_beams=3)
    assert_same(ours.generate(ids, mask, **kw), hf_generate(ref, ids, mask, **kw), f"{variant} beam search")


def _frequent_tokens(ref, ids, mask, n: int = 2) -> list[int]:
    """Tokens greedy decoding emits early: as EOS they make rows finish at different steps."""
    # (no token twice in a row: randomly weighted models like to repeat one token forever)
    out = hf_generate(ref, ids, mask, max_new_tokens=6, eos_token_id=None, forced_eos_token_id=None, no_repeat_ngram_size=1)
    new = out[:, 1:]
    picked: list[int] = []
    # Tokens from the middle of the rows first, so that rows stop at different steps.
    for token in [int(new[1, 2]), int(new[0, 4]), int(new[2, 1])] + new.t().reshape(-1).tolist():
        if token not in picked:
            picked.append(token)
    assert len(picked) >= n
    return picked[:n]


BEAM_OPTIONS = [
    dict(num_return_sequences=2, length_penalty=0.5),
    dict(num_return_sequences=3, length_penalty=-1.0, early_stopping=True),
    dict(num_return_sequences=2, length_penalty=2.0, early_stopping="never"),
]


@pytest.mark.parametrize(
    "variant,options",
    [("bart", BEAM_OPTIONS[0]), ("bart", BEAM_OPTIONS[1]), ("bart", BEAM_OPTIONS[2]), ("marian", BEAM_OPTIONS[1]),
     ("t5", BEAM_OPTIONS[2])],
    ids=["bart-two-returned", "bart-early-stopping", "bart-never", "marian-early-stopping", "t5-never"],
)  # fmt: skip
def test_beam_search_options_with_eos(variant, options, saved_seq2seq):
    ref, ours = saved_seq2seq(variant)
    ids, mask = padded_sources(variant)
    eos = _frequent_tokens(ref, ids, mask, 2)
    kw = dict(max_new_tokens=9, num_beams=3, eos_token_id=eos, forced_eos_token_id=None, **options)
    assert_same(ours.generate(ids, mask, **kw), hf_generate(ref, ids, mask, **kw), f"{variant} beams {options}")


def _processor_cases(eos: list[int]) -> list[dict]:
    return [
        dict(eos_token_id=eos[0]),
        dict(eos_token_id=eos, min_new_tokens=5),
        dict(eos_token_id=eos, min_length=7, forced_eos_token_id=eos[1]),
        dict(forced_bos_token_id=17),  # mBART's target language code
        dict(forced_bos_token_id=17, num_beams=3),
        dict(repetition_penalty=1.7, no_repeat_ngram_size=2),
        dict(bad_words_ids=[[eos[0]], [eos[1], 5], [11, 12, 13]]),
        dict(no_repeat_ngram_size=3, num_beams=3, length_penalty=1.5),
    ]


# (variant, which of the cases): every case on BART, a few on the others.
PROCESSOR_RUNS = [("bart", range(8)), ("mbart", (3, 4)), ("t5-v1.1", (1, 6)), ("pegasus", (2, 5))]


@pytest.mark.parametrize("variant,cases", PROCESSOR_RUNS, ids=[v for v, _ in PROCESSOR_RUNS])
def test_processors(variant, cases, saved_seq2seq):
    ref, ours = saved_seq2seq(variant)
    ids, mask = padded_sources(variant)
    eos = _frequent_tokens(ref, ids, mask, 2)
    all_cases = _processor_cases(eos)
    for i in cases:
        kw = dict(max_new_tokens=10, **all_cases[i])
        assert_same(ours.generate(ids, mask, **kw), hf_generate(ref, ids, mask, **kw), f"{variant} {kw}")


def test_decoder_input_ids_continue_after_the_start_token(saved_seq2seq):
    ref, ours = saved_seq2seq("bart")
    ids, mask = padded_sources("bart")
    prefix = torch.tensor([[5, 6], [7, 8], [9, 10]])
    for dec in (prefix, torch.cat([torch.full((3, 1), 2), prefix], dim=1)):
        kw = dict(max_new_tokens=6, decoder_input_ids=dec)
        got = ours.generate(ids, mask, **kw)
        assert_same(got, hf_generate(ref, ids, mask, **kw), "decoder_input_ids")
        assert got[:, 0].eq(2).all()


def test_generation_config_defaults(saved_seq2seq, tmp_path):
    ref = build_reference("bart")
    g = ref.generation_config
    g.num_beams, g.max_length, g.no_repeat_ngram_size, g.length_penalty = 2, 9, 2, 1.5
    g.forced_bos_token_id = 0
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path)
    ids, mask = padded_sources("bart")
    assert_same(ours.generate(ids, mask), hf_generate(ref, ids, mask), "generation_config.json defaults")


def test_config_json_defaults_without_generation_config(saved_seq2seq, tmp_path):
    """Without generation_config.json, transformers derives the settings from config.json
    (decoder_start_token_id, forced_eos_token_id, and any generation keys it holds)."""
    import json

    tf = transformers()
    _, folder = saved_seq2seq("marian", folder=True)
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes(open(f"{folder}/{name}", "rb").read())
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(num_beams=2, max_length=8, bad_words_ids=[[VOCAB - 1]])
    (tmp_path / "config.json").write_text(json.dumps(config))
    ref = tf.MarianMTModel.from_pretrained(tmp_path).eval()
    ours = lmatlas.load(tmp_path)
    ids, mask = padded_sources("marian")
    expected = hf_generate(ref, ids, mask)
    assert expected.shape[1] == 8
    assert_same(ours.generate(ids, mask), expected, "config.json defaults")


def test_sampling_is_seeded_and_top_k_one_is_greedy(saved_seq2seq):
    _, ours = saved_seq2seq("t5-v1.1")
    ids, mask = padded_sources("t5-v1.1")
    kw = dict(do_sample=True, max_new_tokens=8, temperature=1.5, top_k=50, num_return_sequences=2)
    a = ours.generate(ids, mask, seed=3, **kw)
    assert a.shape[0] == 6
    assert torch.equal(a, ours.generate(ids, mask, seed=3, **kw))
    greedy = ours.generate(ids, mask, max_new_tokens=8)
    assert torch.equal(ours.generate(ids, mask, max_new_tokens=8, do_sample=True, top_k=1, seed=1), greedy)


def test_without_cache_gives_the_same_tokens(saved_seq2seq):
    _, ours = saved_seq2seq("t5")
    ids, mask = padded_sources("t5")
    a = ours.generate(ids, mask, max_new_tokens=6)
    assert torch.equal(a, ours.generate(ids, mask, max_new_tokens=6, use_cache=False))


@pytest.mark.parametrize("variant", ["bart", "t5"])
def test_a_source_of_padding_only_leaves_the_other_rows_alone(variant, saved_seq2seq):
    """A source row that is all padding gives finite scores (its cross-attention averages, as
    transformers' additive masks make it), and the other rows decode as they do alone."""
    _, ours = saved_seq2seq(variant)
    ids, mask = padded_sources(variant)
    mask = mask.clone()
    mask[1] = 0
    kw = dict(max_new_tokens=5, num_beams=3, num_return_sequences=3)
    both = ours.generate(ids, mask, **kw)
    alone = ours.generate(ids[:1], mask[:1], **kw)
    assert torch.equal(both[:3, : alone.shape[1]], alone)
    step = torch.full((3, 1), int(both[0, 0]))
    with torch.no_grad():
        logits = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=step)["logits"]
    assert torch.isfinite(logits).all()


def test_source_encoded_once_and_cross_attention_never_reordered(saved_seq2seq, monkeypatch):
    """Beam search: one encoder pass; the cross-attention keys and values hold one row per source
    (not per beam) and are left as computed, while the self-attention cache follows the beams."""
    _, ours = saved_seq2seq("mbart")
    ids, mask = padded_sources("mbart")
    caches, encodes = [], []
    new_cache, encode = ours.new_cache, ours.encode

    def spy_cache(*args, **kwargs):
        caches.append(new_cache(*args, **kwargs))
        caches.append([(k.clone(), v.clone()) for k, v in caches[-1].cross])
        return caches[0]

    def spy_encode(*args, **kwargs):
        encodes.append(args)
        return encode(*args, **kwargs)

    monkeypatch.setattr(ours, "new_cache", spy_cache)
    monkeypatch.setattr(ours, "encode", spy_encode)
    ours.generate(ids, mask, max_new_tokens=6, num_beams=4)
    cache, before = caches
    assert len(encodes) == 1
    assert isinstance(cache, Seq2SeqCache)
    assert cache.self_attention.batch_size == 12
    for (k, v), (k0, v0) in zip(cache.cross, before):
        assert k.shape[0] == 3 and torch.equal(k, k0) and torch.equal(v, v0)


def test_stream_yields_the_greedy_text(saved_seq2seq):
    from lmatlas.generation import stream

    class Tok:  # decodes ids as words; enough to follow the streamed pieces
        def decode(self, ids, skip_special_tokens=True):
            return "".join(f" w{i}" for i in ids)

    _, ours = saved_seq2seq("marian")
    ids, _ = padded_sources("marian", lengths=(9,))
    pieces = list(stream(ours, Tok(), ids, max_new_tokens=7))
    greedy = ours.generate(ids, max_new_tokens=7)
    assert "".join(pieces) == Tok().decode(greedy[0, 1:].tolist())


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(decoder_input_ids=torch.tensor([[5]])), "decoder_input_ids has 1 rows, but there are 3 sources"),
        (dict(decoder_input_ids=torch.tensor([5, 6, 7])), "decoder_input_ids must be a 2-D tensor"),
        (dict(decoder_input_ids=torch.full((3, 1), VOCAB)), "decoder_input_ids holds a token id outside"),
        (dict(forced_bos_token_id=VOCAB), "forced_bos_token_id 1013 is outside the vocabulary"),
        (dict(forced_eos_token_id=-1), "forced_eos_token_id -1 is outside the vocabulary"),
        (dict(decoder_start_token_id=VOCAB + 3), "decoder_start_token_id 1016 is outside the vocabulary"),
        (dict(bad_words_ids=[5]), "bad_words_ids must be a non-empty list of non-empty lists"),
        (dict(bad_words_ids=[[VOCAB]]), "bad_words_ids must be"),
        (dict(max_new_tokens=45), "max_new_tokens 45 goes beyond the model's 40 positions"),
        (dict(num_beams=0), "num_beams"),
        (dict(beams=3), "unknown argument"),
    ],
)
def test_bad_arguments(kw, match, saved_seq2seq):
    _, ours = saved_seq2seq("bart")
    ids, mask = padded_sources("bart")
    with pytest.raises(lmatlas.LmatlasError, match=match):
        ours.generate(ids, mask, **kw)


def test_source_longer_than_positions(saved_seq2seq):
    _, ours = saved_seq2seq("marian")
    ids = torch.randint(3, VOCAB - 2, (1, 41))
    with pytest.raises(lmatlas.LmatlasError, match="the source is 41 tokens long, but the encoder has only 40"):
        ours.generate(ids, max_new_tokens=2)


def test_no_decoder_start_token(saved_seq2seq, tmp_path):
    ref = build_reference("t5")
    ref.config.decoder_start_token_id = None
    ref.generation_config.decoder_start_token_id = None
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path)
    ids, mask = padded_sources("t5")
    with pytest.raises(lmatlas.LmatlasError, match="no decoder_start_token_id"):
        ours.generate(ids, mask, max_new_tokens=2)
    assert ours.generate(ids, mask, max_new_tokens=2, decoder_start_token_id=pad_id("t5")).shape == (3, 3)


def test_base_model_cannot_generate(saved_seq2seq):
    _, base = saved_seq2seq("bart", "base")
    with pytest.raises(lmatlas.LmatlasError, match="seq2seq-lm head"):
        base.generate(torch.tensor([[5, 6]]))


def test_forward_needs_the_target_and_the_source(saved_seq2seq):
    _, ours = saved_seq2seq("bart")
    with pytest.raises(lmatlas.LmatlasError, match="needs decoder_input_ids"):
        ours(torch.tensor([[5, 6]]))
    with pytest.raises(lmatlas.LmatlasError, match="needs the source"):
        ours(decoder_input_ids=torch.tensor([[2]]))


@pytest.mark.parametrize("variant", ["bart", "t5-v1.1"])
def test_beam_search_without_the_c_kernel(variant, saved_seq2seq, monkeypatch):
    """Where the C cross-attention kernel cannot be built, PyTorch's path gives the same tokens."""
    from lmatlas.runtime import native

    ref, ours = saved_seq2seq(variant)
    ids, mask = padded_sources(variant)
    kw = dict(max_new_tokens=7, num_beams=3)
    with_kernel = ours.generate(ids, mask, **kw)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_failed", "switched off for this test")
    without = ours.generate(ids, mask, **kw)
    assert_same(without, with_kernel, f"{variant} without the kernel")
    assert_same(without, hf_generate(ref, ids, mask, **kw), f"{variant} without the kernel vs transformers")
