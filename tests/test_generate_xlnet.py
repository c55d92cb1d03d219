"""XLNet's generation through lmatlas' engine against transformers' generate(), token for token.

transformers' XLNetLMHeadModel prepares each step as its own: the sequence with a dummy token
appended that nothing may see and whose query stream is the only prediction, the memory of the
earlier tokens carried (all but the last two, which each step reads again). lmatlas'
``xlnet.GenerationMemory`` does the same; greedy and beam search must give the same tokens,
with memory of any length, without memory, causal or bidirectional attention, padded prompts
(whose padding transformers reads as text: its XLNet drops the attention mask).
"""

from __future__ import annotations

import pytest
import torch

import lmatlas

from .reference import randomize, transformers

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, PAD, EOS = 211, 5, 2

SETTINGS = {
    "all-memory": dict(mem_len=None),
    "short-memory": dict(mem_len=4),
    "no-memory": dict(use_mems_eval=False),
    "uni-reuse": dict(attn_type="uni", mem_len=6, reuse_len=2),
    "bi-data": dict(bi_data=True, clamp_len=3, mem_len=5),
}


@pytest.fixture(scope="module", params=list(SETTINGS))
def pair(request, tmp_path_factory):
    tf = transformers()
    config = tf.XLNetConfig(vocab_size=VOCAB, d_model=32, n_layer=2, n_head=2, d_inner=45, pad_token_id=PAD,
                            eos_token_id=EOS, bos_token_id=1, **SETTINGS[request.param])
    torch.manual_seed(0)
    ref = tf.XLNetLMHeadModel(config).eval()
    randomize(ref, seed=11, std=0.3)
    ref.tie_weights()
    folder = tmp_path_factory.mktemp("xlnet-gen") / request.param
    ref.save_pretrained(folder)
    return request.param, ref, lmatlas.load(folder)


def prompts(rows: int = 2, length: int = 6, seed: int = 3, padded: bool = False):
    ids = torch.randint(6, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    if padded:
        ids[1, :3], mask[1, :3] = PAD, 0
    return ids, mask


def reference_generate(ref, ids, mask, **kw):
    with torch.no_grad():
        if ref.config.attn_type != "uni" or ids.shape[0] == 1:
            return ref.generate(input_ids=ids, attention_mask=mask, pad_token_id=PAD, **kw)
        # transformers 4.57.6 cannot add a permutation mask to causal attention over more than
        # one row (an in-place add that does not broadcast): one prompt at a time there.
        rows = [ref.generate(input_ids=ids[r : r + 1], attention_mask=mask[r : r + 1], pad_token_id=PAD, **kw)
                for r in range(ids.shape[0])]
        return torch.cat(rows)


def same(ref, ours, ids, mask, **kw):
    expected = reference_generate(ref, ids, mask, **kw)
    got = ours.generate(ids, attention_mask=mask, **kw)
    assert got.shape == expected.shape and torch.equal(got, expected), f"{kw}:\n{got}\n{expected}"
    return got


@pytest.mark.parametrize("padded", [False, True])
def test_greedy(pair, padded):
    name, ref, ours = pair
    ids, mask = prompts(padded=padded)
    got = same(ref, ours, ids, mask, max_new_tokens=9, do_sample=False)
    assert len(set(got[0, 6:].tolist())) > 1  # a model that says something, not one token over and over


def test_greedy_one_token_prompt_and_several_rows(pair):
    name, ref, ours = pair
    if name == "bi-data":
        ids, mask = prompts(rows=2, length=1, seed=5)
    else:
        ids, mask = prompts(rows=3, length=1, seed=5)
    same(ref, ours, ids, mask, max_new_tokens=7, do_sample=False)


def test_beam_search(pair):
    name, ref, ours = pair
    ids, mask = prompts(seed=7)
    if ref.config.attn_type == "uni":
        # The beams of one prompt are rows of one batch, which transformers cannot run with causal
        # attention (see reference_generate); lmatlas can.
        with pytest.raises(RuntimeError, match="broadcast"), torch.no_grad():
            ref.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=2, num_beams=2)
        out = ours.generate(ids, attention_mask=mask, max_new_tokens=6, num_beams=3, num_return_sequences=3)
        assert out.shape == (6, 12) and torch.equal(out[::3, :6], ids)
        return
    same(ref, ours, ids, mask, max_new_tokens=6, num_beams=3, do_sample=False)
    same(ref, ours, ids, mask, max_new_tokens=5, num_beams=2, num_return_sequences=2, do_sample=False,
         length_penalty=0.5)


def test_use_cache_false_is_the_same(pair):
    """transformers' XLNet carries its memory whatever use_cache says; so does lmatlas."""
    name, ref, ours = pair
    ids, mask = prompts(seed=9)
    same(ref, ours, ids, mask, max_new_tokens=5, do_sample=False, use_cache=False)


def test_sampling_is_seeded(pair):
    _, _, ours = pair
    ids, mask = prompts(seed=2)
    a = ours.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, seed=4)
    b = ours.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, seed=4)
    assert torch.equal(a, b)


def test_generation_needs_the_language_model_head(tmp_path):
    tf = transformers()
    config = tf.XLNetConfig(vocab_size=VOCAB, d_model=32, n_layer=1, n_head=2, d_inner=45, pad_token_id=PAD)
    tf.XLNetForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(lmatlas.LmatlasError, match="causal-lm head"):
        lmatlas.load(tmp_path).generate(torch.tensor([[7, 8]]), max_new_tokens=2)
