"""Transformer-XL against transformers 4.57.6 (``reference_transfo_xl``), on checkpoints written
with random weights (biases, norms and projections included).

Odd shapes on purpose: 3 heads of 5 (inner width 15 on a model of 18), embeddings narrower than
the model, several cutoffs, one table (div_val 1) projected or not and per-cluster tables
(div_val 2 and 3), projections tied and untied, output tables untied, same_length on and off,
clamped and unclamped distances, pre- and post-norm, biases per layer and shared (untie_r), a
model without memory. Every head, and two segments in a row with the memory carried.
"""

from __future__ import annotations

import functools

import pytest
import torch

import lmatlas

from .reference import randomize, transformers
from .reference_transfo_xl import model_class

TOL = 1e-4
VOCAB = 101
_shape = dict(vocab_size=VOCAB, d_model=18, d_embed=14, n_head=3, d_head=5, d_inner=23, n_layer=2, eos_token_id=0)

VARIANTS: dict[str, dict] = {
    # Per-cluster tables at widths 14 and 7, every projection tied but the head's; same_length, clamped.
    "div2": dict(_shape, cutoffs=[13, 47], div_val=2, mem_len=6, clamp_len=4, same_length=True),
    # One projected table, pre-norm, one pair of biases for all layers, three cutoffs, unclamped.
    "div1-pre-shared": dict(_shape, cutoffs=[20, 60, 80], div_val=1, mem_len=5, clamp_len=0, same_length=False,
                            pre_lnorm=True, untie_r=False),
    # One table as wide as the model (no projection) and output tables untied from the input's.
    "div1-untied": dict(_shape, d_embed=18, cutoffs=[31], div_val=1, mem_len=4, clamp_len=2, same_length=True,
                        tie_word_embeddings=False),
    # Widths 27, 9 and 3, projections untied (proj_share_all_but_first off), a memory longer than a segment.
    "div3-own-projections": dict(_shape, d_embed=27, cutoffs=[10, 40, 70], div_val=3, mem_len=11, clamp_len=3,
                                 same_length=True, proj_share_all_but_first=False),
    # No cutoffs (a plain softmax) and no memory.
    "no-memory": dict(_shape, cutoffs=[], div_val=1, mem_len=0, same_length=False),
}  # fmt: skip

CLASSES = {"causal-lm": "TransfoXLLMHeadModel", "base": "TransfoXLModel",
           "sequence-classification": "TransfoXLForSequenceClassification"}
PAD = VOCAB - 1


def build_reference(variant: str, head: str):
    kw = dict(VARIANTS[variant])
    if head == "sequence-classification":  # its score reads d_embed-wide states: d_embed = d_model
        kw.update(d_embed=kw["d_model"], pad_token_id=PAD, num_labels=3)
    config = transformers().TransfoXLConfig(**kw)
    torch.manual_seed(0)
    model = model_class(CLASSES[head])(config).eval()
    randomize(model, seed=sum(map(ord, variant + head)) % 1000)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


@functools.lru_cache(maxsize=None)
def _saved(variant: str, head: str, safe: bool, root: str):
    ref = build_reference(variant, head)
    folder = f"{root}/{variant}-{head}-{'st' if safe else 'bin'}"
    # Biases shared by every layer are one tensor under several names, which transformers only
    # saves to pytorch_model.bin.
    ref.save_pretrained(folder, safe_serialization=safe and VARIANTS[variant].get("untie_r", True))
    return ref, folder


@pytest.fixture(scope="session")
def saved_txl(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("transfo-xl"))

    def get(variant: str, head: str = "causal-lm", safe: bool = True, folder: bool = False):
        ref, path = _saved(variant, head, safe, root)
        return (ref, path) if folder else (ref, lmatlas.load(path))

    return get


def ids(rows: int = 3, length: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB - 1, (rows, length), generator=torch.Generator().manual_seed(seed))


def max_diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def mems_diff(expected, got) -> float:
    if expected is None:
        assert got is None
        return 0.0
    assert len(expected) == len(got)
    return max(max_diff(e, g) for e, g in zip(expected, got))


pytestmark = pytest.mark.usefixtures("one_thread")
FIELD = {"causal-lm": "prediction_scores", "base": "last_hidden_state", "sequence-classification": "logits"}


@pytest.mark.parametrize("head", list(CLASSES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_segments_with_memory(variant, head, saved_txl):
    """A first segment (from transformers' memory of zeros), then a second and a one-token third
    continuing the memory each returned: outputs, hidden states and the new memories."""
    ref, ours = saved_txl(variant, head)
    assert ours.head_name == head and ours.is_decoder
    field = FIELD[head]
    expected_mems = got_mems = None
    for n, segment in enumerate([ids(), ids(length=5, seed=2), ids(length=1, seed=3)]):
        with torch.no_grad():
            e = ref(segment, mems=expected_mems, output_hidden_states=True)
            g = ours(segment, mems=got_mems, output_hidden_states=True)
        assert max_diff(e[field], g[field]) <= TOL, f"{variant} {head} segment {n}"
        assert mems_diff(e.mems, g.mems) <= TOL
        assert max(max_diff(a, b) for a, b in zip(e.hidden_states, g.hidden_states)) <= TOL
        expected_mems, got_mems = e.mems, g.mems
    if got_mems is not None:
        mem_len = VARIANTS[variant]["mem_len"]
        assert [tuple(m.shape) for m in got_mems] == [(mem_len, 3, 18)] * 2
        assert not any(m.requires_grad for m in got_mems)


@pytest.mark.parametrize("variant", ["div2", "div1-pre-shared"])
def test_a_shorter_memory_than_mem_len(variant, saved_txl):
    """transformers continues any memory it is given; a short one meets same_length's window and
    grows back to mem_len."""
    ref, ours = saved_txl(variant, "base")
    with torch.no_grad():
        first = ref(ids()).mems
        short = [m[-2:] for m in first]
        e, g = ref(ids(length=4, seed=5), mems=short), ours(ids(length=4, seed=5), mems=short)
    assert max_diff(e.last_hidden_state, g.last_hidden_state) <= TOL
    assert mems_diff(e.mems, g.mems) <= TOL and g.mems[0].shape[0] == min(6, VARIANTS[variant]["mem_len"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_losses_with_labels(variant, saved_txl):
    """Per-position losses (labels shifted inside, -100 ignored) and their mean. transformers
    writes its per-position losses grouped by cluster unless its ``keep_order`` is on: the
    losses are compared with keep_order, the mean with transformers' default."""
    ref, ours = saved_txl(variant, "causal-lm")
    x = ids(length=8)
    labels = x.clone()
    labels[1, 3:5] = -100
    labels[2, 6] = -100
    with torch.no_grad():
        got = ours(x, labels=labels)
        default = ref(x, labels=labels.clone())
        ref.crit.keep_order = True
        try:
            ordered = ref(x, labels=labels.clone())
        finally:
            ref.crit.keep_order = False
    assert got.losses.shape == (3, 7) and got.prediction_scores is None
    assert max_diff(ordered.losses, got.losses) <= TOL
    assert bool((got.losses[1, 2:4] == 0).all())
    assert abs(default.loss.item() - got.loss.item()) <= TOL
    # The losses are the log-probabilities' own: -log p(next token).
    with torch.no_grad():
        scores = ours(x).prediction_scores
    picked = -scores[:, :-1].gather(2, x[:, 1:, None]).squeeze(2)
    keep = labels[:, 1:] != -100
    assert max_diff(picked[keep], got.losses[keep]) <= TOL
    # A first row with nothing to predict takes an end-of-sequence label, as transformers does.
    labels[0, 1:] = -100
    with torch.no_grad():
        ref.crit.keep_order = True
        try:
            expected = ref(x, labels=labels.clone())
        finally:
            ref.crit.keep_order = False
        got = ours(x, labels=labels)
    assert max_diff(expected.losses, got.losses) <= TOL and got.losses[0, 0] > 0


@pytest.mark.parametrize("variant", ["div2", "div1-untied"])
def test_classifier_reads_the_token_before_the_first_pad(variant, saved_txl):
    """transformers' rule for Transformer-XL: the position before the first pad token, counted
    round to the last position for a row that starts with one or has none."""
    from lmatlas.heads import last_token

    ref, ours = saved_txl(variant, "sequence-classification")
    x = ids(rows=4, length=8)
    x[0, 5:] = PAD  # right padding
    x[1, :2] = PAD  # left padding: the last position
    x[2, 3] = PAD  # a pad inside the text: before it
    with torch.no_grad():
        e, g = ref(x), ours(x)
    assert max_diff(e.logits, g.logits) <= TOL
    assert last_token(x, PAD, before_first_pad=True).tolist() == [4, 7, 2, 7]
    assert max_diff(e.mems[1], g.mems[1]) <= TOL


@pytest.mark.parametrize("variant,head", [("div2", "causal-lm"), ("div1-pre-shared", "base"),
                                          ("div1-untied", "sequence-classification")])
def test_pytorch_bin(variant, head, saved_txl):
    ref, ours = saved_txl(variant, head, safe=False)
    x = ids()
    with torch.no_grad():
        assert max_diff(ref(x)[FIELD[head]], ours(x)[FIELD[head]]) <= TOL


def test_tables_and_projections_tied_as_transformers_ties_them(saved_txl):
    _, ours = saved_txl("div2")
    emb, head = ours.backbone.embeddings, ours.head
    assert head.outputs[0].weight is emb.tables[0].weight and head.outputs[2].weight is emb.tables[2].weight
    assert head.projections["1"] is emb.projections[1] and head.projections["0"] is not emb.projections[0]
    _, own = saved_txl("div3-own-projections")
    assert all(own.head.projections[str(i)] is not own.backbone.embeddings.projections[i] for i in range(4))
    _, untied = saved_txl("div1-untied")
    assert untied.head.outputs[0].weight is not untied.backbone.embeddings.tables[0].weight
    _, shared = saved_txl("div1-pre-shared")
    assert not hasattr(shared.backbone.layers[0].attn, "content_bias")
    for model, ref in ((ours, "div2"), (own, "div3-own-projections"), (untied, "div1-untied"),
                       (shared, "div1-pre-shared")):
        assert model.num_parameters() == saved_txl(ref, folder=True)[0].num_parameters()


@pytest.mark.parametrize("variant,head", [("div2", "causal-lm"), ("div1-pre-shared", "causal-lm"),
                                          ("div3-own-projections", "base"), ("div1-untied", "causal-lm"),
                                          ("no-memory", "sequence-classification")])
def test_saved_back_loads_in_transformers(variant, head, saved_txl, tmp_path):
    """lmatlas' save: transformers reads the folder into the same model as from its own (no
    weight left to initialise), and lmatlas reads it back to the same outputs."""
    import warnings

    from lmatlas.save import save_model

    ref, ours = saved_txl(variant, head)
    save_model(ours, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        back, info = model_class(CLASSES[head]).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    x = ids()
    with torch.no_grad():
        expected = ref(x)[FIELD[head]]
        assert max_diff(expected, back.eval()(x)[FIELD[head]]) <= TOL
        assert torch.equal(lmatlas.load(tmp_path)(x)[FIELD[head]], ours(x)[FIELD[head]])
    # (transformers reads a shared pair of biases into one copy per layer, from its own files too.)
    own = model_class(CLASSES[head]).from_pretrained(saved_txl(variant, head, folder=True)[1])
    assert back.num_parameters() == own.num_parameters()
