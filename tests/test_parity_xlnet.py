"""XLNet against transformers, on checkpoints it writes with random weights (biases, norms, the
relative biases and segment vectors, the query stream's start vector: all random).

Unusual shapes on purpose: an odd vocabulary, hidden 48 with 3 heads, an MLP of 70; batches
padded on the left (XLNet's tokenizer) and on the right, with token types (<cls> in type 2);
every attention setting (bi and uni, bi_data, clamp_len, same_length); the two streams with
perm_mask and target_mapping; two segments with memory carried between them; every head,
the beam question-answering head's top-k outputs and its training losses included.
"""

from __future__ import annotations

import pytest
import torch

import lmatlas
from lmatlas.save import save_model

from .reference import randomize, saved_references, transformers

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-4
VOCAB = 1013
PAD = 5

CLASSES = {
    "base": "XLNetModel",
    "causal-lm": "XLNetLMHeadModel",
    "sequence-classification": "XLNetForSequenceClassification",
    "token-classification": "XLNetForTokenClassification",
    "multiple-choice": "XLNetForMultipleChoice",
    "question-answering": "XLNetForQuestionAnsweringSimple",
    "question-answering-beam": "XLNetForQuestionAnswering",
}
# The attention settings, each a config of its own.
VARIANTS = {
    "bi": dict(),
    "uni-same-length": dict(attn_type="uni", same_length=True),
    "uni": dict(attn_type="uni"),
    "bi-data-clamped": dict(bi_data=True, clamp_len=4),
    "clamped-relu-mean": dict(clamp_len=3, ff_activation="relu", summary_type="mean", summary_activation="gelu"),
    "first-no-projection": dict(summary_type="first", summary_use_proj=False, summary_activation=None,
                                start_n_top=3, end_n_top=4),
}
# The fields each head returns (beside mems), and the index fields that must be equal.
FIELDS = {
    "base": ["last_hidden_state"],
    "question-answering": ["start_logits", "end_logits"],
    "question-answering-beam": ["start_top_log_probs", "start_top_index", "end_top_log_probs", "end_top_index",
                                "cls_logits"],
}


def build(variant: str, head: str, **extra):
    tf = transformers()
    settings = dict(mem_len=9) | VARIANTS[variant] | extra
    config = tf.XLNetConfig(vocab_size=VOCAB, d_model=48, n_layer=2, n_head=3, d_inner=70, pad_token_id=PAD,
                            layer_norm_eps=1e-5, **settings)
    config.num_labels = 2 if head.startswith("question") else 4
    torch.manual_seed(0)
    model = getattr(tf, CLASSES[head])(config).eval()
    randomize(model, seed=sum(map(ord, variant + head)) % 1000)
    model.tie_weights()
    return model


saved = saved_references(build)


def batch(rows: int = 4, length: int = 13, left: bool = True, seed: int = 1):
    """Token ids, attention mask and token types: rows of several lengths, padded on the left
    (as XLNet's tokenizer pads) or the right; types 0 then 1, the last real token <cls>'s 2."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, VOCAB, (rows, length), generator=gen)
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    for row, n in enumerate([length, length - 4, 3, length - 1][:rows]):
        real = slice(length - n, length) if left else slice(0, n)
        pad = slice(0, length - n) if left else slice(n, length)
        ids[row, pad], mask[row, pad] = PAD, 0
        types[row, pad] = 3
        span = types[row, real]
        span[len(span) // 2 :] = 1
        span[-1] = 2
    return ids, mask, types


def inputs_for(head: str, ids, mask, types) -> dict:
    if head != "multiple-choice":
        return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
    b = ids.shape[0] // 2  # (batch, 2 choices, length)
    return dict(input_ids=ids.view(b, 2, -1), attention_mask=mask.view(b, 2, -1), token_type_ids=types.view(b, 2, -1))


def worst(expected, got, fields) -> float:
    diff = 0.0
    for field in fields:
        e, g = getattr(expected, field), got[field]
        assert g is not None and g.shape == e.shape, (field, None if g is None else g.shape, e.shape)
        if field.endswith("_index"):
            same_indices(g, e, getattr(expected, field.replace("_index", "_log_probs")), field)
        else:
            diff = max(diff, (g.float() - e).abs().max().item())
    return diff


def same_indices(got, expected, probs, field: str) -> None:
    """The beam's indices are the reference's, but where two probabilities tie (padding the
    model reads alike) either may come first: there only the tie is checked."""
    for slot in (got != expected).nonzero().tolist():
        row, k = slot
        tied = (probs[row] - probs[row, k]).abs() <= 1e-6
        assert int(tied.sum()) > 1, f"{field}: {got[row].tolist()} vs {expected[row].tolist()}"


def mems_diff(expected, got) -> float:
    assert len(got) == len(expected)
    assert all(g.shape == e.shape for g, e in zip(got, expected)), [(g.shape, e.shape) for g, e in zip(got, expected)]
    return max((g - e).abs().max().item() for g, e in zip(got, expected))


def compare(ref, ours, head: str, **inputs) -> float:
    if ref.config.attn_type == "uni" and any(inputs.get(k) is not None for k in ("attention_mask", "input_mask",
                                                                                  "perm_mask")):
        # transformers 4.57.6 cannot mask causal attention over a batch of more than one (its
        # in-place add of the masks does not broadcast): compared one row at a time, lmatlas
        # reading the whole batch.
        return _by_rows(ref, ours, head, inputs)
    with torch.no_grad():
        expected, got = ref(**inputs), ours(**inputs)
    diff = worst(expected, got, FIELDS.get(head, ["logits"]))
    if expected.mems is not None:
        diff = max(diff, mems_diff(expected.mems, got["mems"]))
    else:
        assert got.get("mems") is None
    return diff


def _by_rows(ref, ours, head: str, inputs: dict) -> float:
    with torch.no_grad():
        got = ours(**inputs)
    fields = FIELDS.get(head, ["logits"])
    diff = 0.0
    rows = inputs["input_ids"].shape[0]
    choices = inputs["input_ids"].shape[1] if head == "multiple-choice" else 1
    for r in range(rows):
        for c in range(choices):
            one = {k: _row(v, r, c, head) for k, v in inputs.items()}
            with torch.no_grad():
                expected = ref(**one)
            for field in fields:
                e = getattr(expected, field)
                g = got[field][r : r + 1]
                if head == "multiple-choice":
                    g = g[:, c : c + 1]
                if field.endswith("_index"):
                    same_indices(g, e, getattr(expected, field.replace("_index", "_log_probs")), field)
                else:
                    diff = max(diff, (g.float() - e).abs().max().item())
            if expected.mems is not None:
                flat = r * choices + c
                diff = max(diff, mems_diff(expected.mems, [m[:, flat : flat + 1] for m in got["mems"]]))
    return diff


def _row(value, r: int, c: int, head: str):
    if not isinstance(value, torch.Tensor) or value.ndim == 0:
        return value
    value = value[r : r + 1]
    return value[:, c : c + 1] if head == "multiple-choice" else value


@pytest.mark.parametrize("head", list(CLASSES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity(variant, head, tmp_path_factory):
    ref, folder = saved(variant, head, True, str(tmp_path_factory.getbasetemp() / "xlnet"))
    ours = lmatlas.load(folder)
    assert ours.head_name == head and ours.config.xlnet.attn_type == ref.config.attn_type
    assert ours.num_parameters() == ref.num_parameters()
    for left in (True, False):
        ids, mask, types = batch(left=left)
        diff = compare(ref, ours, head, **inputs_for(head, ids, mask, types))
        assert diff <= TOL, f"{variant} {head} ({'left' if left else 'right'} padding): max abs diff {diff:.2e}"
    # No token types (then no segment term at all), and the original code's input_mask.
    ids, mask, _ = batch()
    diff = compare(ref, ours, head, **{k: v for k, v in inputs_for(head, ids, mask, mask).items()
                                       if k != "token_type_ids"})
    assert diff <= TOL, f"{variant} {head} without token types: {diff:.2e}"
    if head != "multiple-choice":
        diff = compare(ref, ours, head, input_ids=ids, input_mask=1 - mask)
        assert diff <= TOL, f"{variant} {head} with input_mask: {diff:.2e}"


@pytest.mark.parametrize("head", list(CLASSES))
def test_bin_checkpoint(head, tmp_path_factory):
    ref, folder = saved("bi", head, False, str(tmp_path_factory.getbasetemp() / "xlnet"))
    ours = lmatlas.load(folder)
    ids, mask, types = batch()
    assert compare(ref, ours, head, **inputs_for(head, ids, mask, types)) <= TOL


def _permutation(rows: int, length: int, seed: int = 4):
    """A permutation mask of random orders over the last half of each row, and the targets."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.zeros(rows, length, length)
    targets = list(range(length // 2, length))
    mapping = torch.zeros(rows, len(targets), length)
    for r in range(rows):
        order = torch.randperm(length, generator=gen)
        rank = torch.empty(length, dtype=torch.long)
        rank[order] = torch.arange(length)
        for i in range(length):
            for j in targets:
                perm[r, i, j] = float(rank[j] >= rank[i])
        for m, j in enumerate(targets):
            mapping[r, m, j] = 1.0
    return perm, mapping


@pytest.mark.parametrize("variant", ["bi", "uni-same-length", "bi-data-clamped"])
@pytest.mark.parametrize("head", ["base", "causal-lm"])
def test_two_streams(variant, head, tmp_path_factory):
    """perm_mask and target_mapping: the query stream's states (and the LM's logits) at the
    predictions, with padding and token types."""
    ref, folder = saved(variant, head, True, str(tmp_path_factory.getbasetemp() / "xlnet"))
    ours = lmatlas.load(folder)
    ids, mask, types = batch()
    perm, mapping = _permutation(*ids.shape)
    for extra in (dict(target_mapping=mapping), dict(), dict(attention_mask=mask, token_type_ids=types,
                                                           target_mapping=mapping)):
        diff = compare(ref, ours, head, input_ids=ids, perm_mask=perm, **extra)
        assert diff <= TOL, f"{variant} {head} {sorted(extra)}: {diff:.2e}"
    # The query stream without a permutation: every prediction reads every token but its own.
    diff = compare(ref, ours, head, input_ids=ids, target_mapping=mapping)
    assert diff <= TOL


@pytest.mark.parametrize("variant,extra", [("bi", {}), ("uni-same-length", {}), ("bi", dict(mem_len=0)),
                                           ("uni", dict(reuse_len=5, mem_len=7))])
@pytest.mark.parametrize("head", ["base", "causal-lm"])
def test_memory_across_segments(variant, extra, head):
    """Two segments one after the other, the first's memory carried into the second: the same
    outputs and the same new memory as the reference's, with and without the two streams."""
    ref = build(variant, head, **extra)
    ours = lmatlas.load(_saved_now(ref))
    first, mask, types = batch(length=11, seed=2)
    second, _, _ = batch(length=8, seed=3)
    rows = slice(0, 4)
    if ref.config.attn_type == "uni":  # transformers masks causal attention only for one row (see compare)
        rows = slice(1, 2)
    first, mask, types, second = first[rows], mask[rows], types[rows], second[rows]
    with torch.no_grad():
        expected = ref(first, attention_mask=mask, token_type_ids=types, use_mems=True)
        got = ours(first, attention_mask=mask, token_type_ids=types, use_mems=True)
        assert mems_diff(expected.mems, got["mems"]) <= TOL
        perm, mapping = _permutation(len(second), 8)
        for kwargs in (dict(), dict(perm_mask=perm, target_mapping=mapping), dict(token_type_ids=types[:, :8])):
            e = ref(second, mems=expected.mems, use_mems=True, **kwargs)
            g = ours(second, mems=got["mems"], use_mems=True, **kwargs)
            diff = max(worst(e, g, FIELDS.get(head, ["logits"])), mems_diff(e.mems, g["mems"]))
            assert diff <= TOL, f"{variant} {extra} {sorted(kwargs)}: {diff:.2e}"
        # The reference's own memory, read by lmatlas (the layout is transformers').
        g = ours(second, mems=expected.mems)
        assert worst(ref(second, mems=expected.mems), g, FIELDS.get(head, ["logits"])) <= TOL


def _saved_now(ref):
    import tempfile

    folder = tempfile.mkdtemp(prefix="xlnet-")
    ref.save_pretrained(folder)
    return folder


def test_memory_kept_in_training_only_when_asked():
    ref = build("bi", "base", use_mems_train=False)
    ours = lmatlas.load(_saved_now(ref)).train()
    ids, _, _ = batch()
    assert ours(ids)["mems"] is None
    assert ours.eval()(ids)["mems"] is not None
    assert ours(ids, use_mems=False)["mems"] is None


def test_hidden_states(tmp_path_factory):
    ref, folder = saved("bi", "base", True, str(tmp_path_factory.getbasetemp() / "xlnet"))
    ours = lmatlas.load(folder)
    ids, mask, types = batch()
    perm, mapping = _permutation(*ids.shape)
    for extra in (dict(), dict(perm_mask=perm, target_mapping=mapping)):
        with torch.no_grad():
            e = ref(ids, attention_mask=mask, output_hidden_states=True, **extra).hidden_states
            g = ours(ids, attention_mask=mask, output_hidden_states=True, **extra)["hidden_states"]
        assert len(g) == len(e)
        assert max((a - b).abs().max().item() for a, b in zip(g, e)) <= TOL


def test_beam_question_answering_p_mask_cls_index_and_losses(tmp_path_factory):
    """The beam head with p_mask and cls_index, and its training losses: start and end, then
    with the answerability term."""
    head = "question-answering-beam"
    ref, folder = saved("bi", head, True, str(tmp_path_factory.getbasetemp() / "xlnet"))
    ours = lmatlas.load(folder)
    ids, mask, types = batch()
    p_mask = torch.zeros(ids.shape)
    p_mask[:, :4] = 1.0
    cls_index = torch.tensor([12, 12, 11, 12])
    diff = compare(ref, ours, head, input_ids=ids, attention_mask=mask, token_type_ids=types, p_mask=p_mask,
                   cls_index=cls_index)
    assert diff <= TOL
    starts, ends = torch.tensor([5, 9, 11, 2]), torch.tensor([7, 12, 12, 4])
    impossible = torch.tensor([0.0, 1.0, 0.0, 1.0])
    for labels in (dict(), dict(cls_index=cls_index, is_impossible=impossible)):
        kwargs = dict(input_ids=ids, attention_mask=mask, p_mask=p_mask, start_positions=starts, end_positions=ends,
                      **labels)
        with torch.no_grad():
            e, g = ref(**kwargs).loss, ours(**kwargs)["loss"]
        assert abs(e.item() - g.item()) <= TOL, labels


def test_loaded_head_choices(tmp_path_factory):
    """Each transformers class loads with its lmatlas head; a base model reads any of them."""
    for head, cls in CLASSES.items():
        _, folder = saved("bi", head, True, str(tmp_path_factory.getbasetemp() / "xlnet"))
        assert lmatlas.load(folder).head_name == head, cls
    ref, folder = saved("bi", "causal-lm", True, str(tmp_path_factory.getbasetemp() / "xlnet"))
    ours = lmatlas.load(folder, head="base")
    ids, mask, _ = batch()
    with torch.no_grad():
        assert (ours(ids, attention_mask=mask)["last_hidden_state"]
                - ref.transformer(ids, attention_mask=mask).last_hidden_state).abs().max() <= TOL
    assert ours.backbone.embeddings.tokens.weight is not None
    lm = lmatlas.load(folder)
    assert lm.head.decoder.weight is lm.backbone.embeddings.tokens.weight  # tied


@pytest.mark.parametrize("head", list(CLASSES))
def test_saved_back_loads_in_transformers(head, tmp_path):
    """lmatlas' save of a loaded folder reads in transformers with identical outputs."""
    ref = build("uni-same-length", head)
    ref.save_pretrained(tmp_path / "ref")
    ours = lmatlas.load(tmp_path / "ref")
    save_model(ours, tmp_path / "ours")
    again, info = type(ref).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    again.eval()
    ids, mask, types = batch()
    inputs = inputs_for(head, ids, mask, types)
    del inputs["attention_mask"]  # (transformers masks causal attention only for one row: see compare)
    with torch.no_grad():
        e, g = ref(**inputs), again(**inputs)
    for field in FIELDS.get(head, ["logits"]):
        assert torch.equal(getattr(e, field), getattr(g, field)), field
    assert again.config.attn_type == "uni" and again.config.same_length


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision(dtype, tmp_path_factory):
    """Half precision keeps about three significant digits, masks included (float16's -65500)."""
    ref, folder = saved("uni-same-length", "causal-lm", True, str(tmp_path_factory.getbasetemp() / "xlnet"))
    ours = lmatlas.load(folder, dtype=dtype)
    ids, mask, types = batch()
    perm, mapping = _permutation(1, ids.shape[1])
    with torch.no_grad():
        expected = ref(ids[1:2], attention_mask=mask[1:2], perm_mask=perm, target_mapping=mapping).logits
        got = ours(ids[1:2], attention_mask=mask[1:2], perm_mask=perm, target_mapping=mapping)["logits"].float()
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() < 0.1 * expected.abs().max().item()
