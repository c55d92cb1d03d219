"""Encoder presets against transformers, on checkpoints it writes with random weights.

Unusual shapes on purpose: an odd vocabulary, hidden 48 with 3 or 4 heads, narrow
factorised embeddings, ALBERT groups, right-padded batches with token types.
"""

from __future__ import annotations

import pytest
import torch

import lmatlas

from .reference import randomize, save_reference, transformers

TOL = 1e-4
VOCAB = 1013

FAMILIES = {
    "bert": dict(
        config="BertConfig",
        kw=dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                intermediate_size=70, max_position_embeddings=40, type_vocab_size=3, pad_token_id=0),
        classes={"base": "BertModel", "masked-lm": "BertForMaskedLM",
                 "sequence-classification": "BertForSequenceClassification",
                 "token-classification": "BertForTokenClassification",
                 "question-answering": "BertForQuestionAnswering"},
    ),
    "distilbert": dict(
        config="DistilBertConfig",
        kw=dict(vocab_size=VOCAB, dim=48, n_layers=3, n_heads=4, hidden_dim=70, max_position_embeddings=40,
                pad_token_id=0),
        classes={"base": "DistilBertModel", "masked-lm": "DistilBertForMaskedLM",
                 "sequence-classification": "DistilBertForSequenceClassification",
                 "token-classification": "DistilBertForTokenClassification",
                 "question-answering": "DistilBertForQuestionAnswering"},
    ),
    "roberta": dict(
        config="RobertaConfig",
        kw=dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                intermediate_size=70, max_position_embeddings=42, type_vocab_size=1, pad_token_id=1,
                bos_token_id=0, eos_token_id=2),
        classes={"base": "RobertaModel", "masked-lm": "RobertaForMaskedLM",
                 "sequence-classification": "RobertaForSequenceClassification",
                 "token-classification": "RobertaForTokenClassification",
                 "question-answering": "RobertaForQuestionAnswering"},
    ),
    "xlm-roberta": dict(
        config="XLMRobertaConfig",
        kw=dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                intermediate_size=70, max_position_embeddings=42, type_vocab_size=1, pad_token_id=1),
        classes={"base": "XLMRobertaModel", "masked-lm": "XLMRobertaForMaskedLM",
                 "sequence-classification": "XLMRobertaForSequenceClassification",
                 "token-classification": "XLMRobertaForTokenClassification",
                 "question-answering": "XLMRobertaForQuestionAnswering"},
    ),
    "albert": dict(
        config="AlbertConfig",
        kw=dict(vocab_size=VOCAB, embedding_size=20, hidden_size=48, num_hidden_layers=5, num_attention_heads=4,
                intermediate_size=70, num_hidden_groups=2, inner_group_num=2, max_position_embeddings=40,
                type_vocab_size=2, pad_token_id=0),
        classes={"base": "AlbertModel", "masked-lm": "AlbertForMaskedLM",
                 "sequence-classification": "AlbertForSequenceClassification",
                 "token-classification": "AlbertForTokenClassification",
                 "question-answering": "AlbertForQuestionAnswering"},
    ),
    "electra": dict(
        config="ElectraConfig",
        kw=dict(vocab_size=VOCAB, embedding_size=24, hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                intermediate_size=70, max_position_embeddings=40, type_vocab_size=2, pad_token_id=0),
        classes={"base": "ElectraModel", "masked-lm": "ElectraForMaskedLM",
                 "sequence-classification": "ElectraForSequenceClassification",
                 "token-classification": "ElectraForTokenClassification",
                 "question-answering": "ElectraForQuestionAnswering",
                 "replaced-token-detection": "ElectraForPreTraining"},
    ),
    # ERNIE 2.0/3.0 checkpoints embed a task type too (use_task_id).
    "ernie": dict(
        config="ErnieConfig",
        kw=dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=70, max_position_embeddings=40, type_vocab_size=3, pad_token_id=0,
                use_task_id=True, task_type_vocab_size=5),
        classes={"base": "ErnieModel", "masked-lm": "ErnieForMaskedLM",
                 "sequence-classification": "ErnieForSequenceClassification",
                 "token-classification": "ErnieForTokenClassification",
                 "question-answering": "ErnieForQuestionAnswering"},
    ),
    # Big Bird with its full attention (block-sparse below).
    "big_bird": dict(
        config="BigBirdConfig",
        kw=dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                intermediate_size=70, max_position_embeddings=40, type_vocab_size=2, pad_token_id=0,
                attention_type="original_full", rescale_embeddings=True, use_bias=False),
        classes={"base": "BigBirdModel", "masked-lm": "BigBirdForMaskedLM",
                 "sequence-classification": "BigBirdForSequenceClassification",
                 "token-classification": "BigBirdForTokenClassification",
                 "question-answering": "BigBirdForQuestionAnswering"},
    ),
}

CASES = [(family, head) for family, spec in FAMILIES.items() for head in spec["classes"]]


def build_reference(family: str, head: str, **extra):
    tf = transformers()
    spec = FAMILIES[family]
    config = getattr(tf, spec["config"])(**(spec["kw"] | extra))
    config.num_labels = 2 if head == "question-answering" else 5
    torch.manual_seed(0)
    model = getattr(tf, spec["classes"][head])(config).eval()
    randomize(model, seed=sum(map(ord, family + head)) % 1000)  # not hash(): it changes from run to run
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def batch(pad_id: int, type_vocab: int):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 17), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate((17, 11, 4)):  # right padding
        ids[row, length:] = pad_id
        mask[row, length:] = 0
    types = torch.zeros_like(ids)
    if type_vocab > 1:
        types[:, 8:] = 1
        types[0, 14:] = type_vocab - 1
    return ids, mask, types


def compare(ref, ours, head: str, inputs: dict) -> float:
    with torch.no_grad():
        expected = ref(**inputs)
        got = ours(**inputs)
    fields = {
        "base": ["last_hidden_state", "pooler_output"],
        "question-answering": ["start_logits", "end_logits"],
    }.get(head, ["logits"])
    worst = 0.0
    for field in fields:
        e = getattr(expected, field, None)
        if e is None:
            assert got.get(field) is None, field
            continue
        g = got[field]
        assert g is not None, f"lmatlas gives no {field}"
        assert g.shape == e.shape, (field, g.shape, e.shape)
        worst = max(worst, (g.float() - e).abs().max().item())
    return worst


@pytest.mark.parametrize("family,head", CASES)
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_parity(family, head, safe, tmp_path):
    ref = build_reference(family, head)
    save_reference(ref, tmp_path, safe)
    ours = lmatlas.load(tmp_path)
    assert ours.head_name == head
    cfg = ref.config
    ids, mask, types = batch(cfg.pad_token_id, getattr(cfg, "type_vocab_size", 0))
    inputs = dict(input_ids=ids, attention_mask=mask)
    if family != "distilbert":
        inputs["token_type_ids"] = types
    diff = compare(ref, ours, head, inputs)
    assert diff <= TOL, f"{family} {head}: max abs diff {diff:.2e}"
    if family == "ernie":
        tasks = torch.zeros_like(ids)
        tasks[1:, 5:] = cfg.task_type_vocab_size - 1
        diff = compare(ref, ours, head, dict(inputs, task_type_ids=tasks))
        assert diff <= TOL, f"{family} {head} with task types: max abs diff {diff:.2e}"


def test_ernie_without_task_types(tmp_path):
    """ERNIE 1.0's checkpoints have no task-type table (use_task_id false), and refuse the ids."""
    ref = build_reference("ernie", "masked-lm", use_task_id=False)
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path)
    assert ours.backbone.embeddings.task_types is None
    ids, mask, types = batch(0, 3)
    assert compare(ref, ours, "masked-lm", dict(input_ids=ids, attention_mask=mask, token_type_ids=types)) <= TOL
    with pytest.raises(lmatlas.LmatlasError, match="task_type_ids"):
        ours(input_ids=ids, task_type_ids=torch.zeros_like(ids))


def test_base_from_head_checkpoint(tmp_path):
    """A base model read from a masked-LM checkpoint: same hidden states, no pooler invented."""
    ref = build_reference("bert", "masked-lm")
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path, head="base")
    ids, mask, types = batch(0, 3)
    with torch.no_grad():
        expected = ref.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert got.pooler_output is None
    assert (got.last_hidden_state - expected).abs().max().item() <= TOL


def test_head_from_base_checkpoint_is_fresh(tmp_path):
    """Fine-tuning starts from a base checkpoint: the new head is initialised, with a warning."""
    ref = build_reference("bert", "base")
    ref.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="newly initialised"):
        ours = lmatlas.load(tmp_path, head="sequence-classification")
    ids, mask, types = batch(0, 3)
    out = ours(input_ids=ids, attention_mask=mask)
    assert out.logits.shape == (3, 5)


def test_tied_embeddings_share_storage(tmp_path):
    ref = build_reference("roberta", "masked-lm")
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path)
    assert ours.head.decoder.weight is ours.backbone.embeddings.tokens.weight


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision(dtype, tmp_path):
    ref = build_reference("bert", "masked-lm")
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path, dtype=dtype)
    assert ours.dtype == getattr(torch, dtype)
    ids, mask, types = batch(0, 3)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = ours(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.float()
    # Half precision keeps about three significant digits.
    assert (got - expected).abs().max().item() < 0.1 * expected.abs().max().item()


def test_sharded_checkpoint(tmp_path):
    ref = build_reference("bert", "token-classification")
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ours = lmatlas.load(tmp_path)
    ids, mask, types = batch(0, 3)
    assert compare(ref, ours, "token-classification", dict(input_ids=ids, attention_mask=mask, token_type_ids=types)) <= TOL


@pytest.mark.parametrize("head", list(FAMILIES["big_bird"]["classes"]))
@pytest.mark.parametrize("random_blocks", [1, 2])
def test_big_bird_block_sparse(head, random_blocks, tmp_path):
    """Big Bird's block-sparse attention: blocks of 4 tokens, rows of 45, 38 and 9 tokens padded
    to whole blocks inside the model; compared at the real tokens (padding is undefined)."""
    ref = build_reference("big_bird", head, attention_type="block_sparse", block_size=4,
                          num_random_blocks=random_blocks, max_position_embeddings=64)
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path)
    assert ours.config.block_sparse
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(3, VOCAB, (3, 45), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate((45, 38, 9)):
        ids[row, length:] = 0
        mask[row, length:] = 0
    ids[:, 12] = ref.config.sep_token_id  # the question's end, for the QA head
    types = torch.zeros_like(ids)
    types[:, 20:] = 1
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
    with torch.no_grad():
        expected, got = ref(**inputs), ours(**inputs)
    assert getattr(ref, "bert", ref).attention_type == "block_sparse"  # long enough: the reference kept it
    real = mask.bool()
    pairs = {"base": [("last_hidden_state", real), ("pooler_output", None)],
             "sequence-classification": [("logits", None)],
             "question-answering": [("start_logits", real), ("end_logits", real)]}.get(head, [("logits", real)])
    for field, where in pairs:
        e, g = getattr(expected, field), got[field]
        diff = (g - e) if where is None else (g - e)[where]
        assert diff.abs().max().item() <= TOL, f"{head} {field}: {diff.abs().max().item():.2e}"


def test_big_bird_sparse_pattern_reads_fewer_keys():
    """The pattern itself: the first and last blocks global, every other block five blocks and its
    random ones (block 0 outside training, so block 0 counted twice)."""
    from lmatlas.sparse_attention import block_counts

    counts = block_counts(8, 2)[0]
    assert counts[0].tolist() == [1] * 8 and counts[7].tolist() == [1] * 8
    assert counts[4].tolist() == [3, 0, 0, 1, 1, 1, 0, 1]  # global 0 (+2 random), window 3-5, global 7
    assert counts[1].tolist() == [3, 1, 1, 0, 0, 0, 0, 1]
    assert counts[6].tolist() == [3, 0, 0, 0, 0, 1, 1, 1]


def test_big_bird_random_blocks_in_training():
    """In training each head draws its random blocks: distinct, never global, never its window."""
    from lmatlas.sparse_attention import block_counts, draw_random_blocks

    drawn = draw_random_blocks(10, 3, heads=4, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (4, 8, 3)
    for h in range(4):
        for q in range(1, 9):
            blocks = drawn[h, q - 1].tolist()
            assert len(set(blocks)) == 3 and all(0 < b < 9 and abs(b - q) > 1 for b in blocks)
    assert not torch.equal(drawn[0], drawn[1])  # heads differ
    counts = block_counts(10, 3, drawn)
    reads = counts.sum(-1)  # fixed blocks (4 beside the global rows, else 5) and 3 random ones
    assert (reads[:, 2:-2] == 5 + 3).all() and (reads[:, [1, -2]] == 4 + 3).all()


def test_big_bird_question_answering_masks_the_question(tmp_path):
    """Big Bird's QA head without token types: the question (to the first [SEP]) is type 0 and
    kept out of the answer, the context type 1, as transformers derives them."""
    ref = build_reference("big_bird", "question-answering")
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path)
    ids, mask, _ = batch(0, 2)
    sep = ref.config.sep_token_id
    ids[ids == sep] = sep + 1
    ids[:, 5] = sep
    with torch.no_grad():
        expected, got = ref(input_ids=ids, attention_mask=mask), ours(input_ids=ids, attention_mask=mask)
    for field in ("start_logits", "end_logits"):
        assert (got[field] - getattr(expected, field))[mask.bool()].abs().max().item() <= TOL
    assert (got["start_logits"][:, 1:6] < -1e5).all()  # the question's tokens, [CLS] aside
