"""Transformer-XL through lmatlas' generation engine, against transformers' generate.

transformers' ``TransfoXLLMHeadModel.prepare_inputs_for_generation`` feeds the prompt first,
then each new token alone with the ``mems`` the last step returned: the memory is the past. In
4.57.6 its generate hands the model an empty ``DynamicCache`` as that past, which the model
cannot read; with ``use_cache=False`` generate creates no cache object and passes the model's
own ``mems`` from step to step, which is the decoding the model was written for, so the
reference runs with it. lmatlas' engine carries the memory in ``recurrence.Memory``, its cache.

The text tests use a word-level ``tokenizer.json`` built here from Shakespeare (transformers'
own TransfoXLTokenizer reads a pickled ``vocab.pkl``, which lmatlas does not load).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

import lmatlas
from lmatlas.cli import main

from .paths import data_file
from .reference import transformers
from .test_parity_transfo_xl import VARIANTS, VOCAB, saved_txl  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def prompts(rows: int = 2, length: int = 6, seed: int = 4) -> torch.Tensor:
    return torch.randint(1, VOCAB - 1, (rows, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("mode", [dict(), dict(repetition_penalty=1.3, no_repeat_ngram_size=2), dict(num_beams=3),
                                  dict(num_beams=3, num_return_sequences=2, length_penalty=0.5)],
                         ids=["greedy", "greedy-processors", "beams", "beams-2"])
def test_generate_as_transformers(variant, mode, saved_txl):
    """Greedy and beam search token for token, past the memory's length (12 new tokens, memories
    of 0 to 11): the memory is carried, and beams reorder it."""
    ref, ours = saved_txl(variant)
    x = prompts()
    with torch.no_grad():
        expected = ref.generate(x, max_new_tokens=12, do_sample=False, use_cache=False, **mode)
    got = ours.generate(x, max_new_tokens=12, do_sample=False, **mode)
    assert torch.equal(expected, got), f"{variant} {mode}:\n{expected}\n{got}"


def test_each_step_reads_only_its_token(saved_txl, monkeypatch):
    """After the prompt, every forward pass reads one new token and the memory."""
    _, ours = saved_txl("div2")
    seen = []
    segment = ours.backbone.segment
    monkeypatch.setattr(ours.backbone, "segment", lambda ids, memory, *a: seen.append(
        (ids.shape[1], None if memory is None else memory[0].shape[0])) or segment(ids, memory, *a))
    ours.generate(prompts(), max_new_tokens=4, do_sample=False)
    assert seen == [(6, None), (1, 6), (1, 6), (1, 6)]


def test_seeded_sampling_carries_a_memory_per_sample(saved_txl):
    """Samples of one prompt each carry their own memory: reproducible with a seed, and with
    top_k=1 the greedy tokens."""
    _, ours = saved_txl("div3-own-projections")
    x = prompts()
    kw = dict(do_sample=True, max_new_tokens=8, temperature=1.5, num_return_sequences=2)
    a, b = ours.generate(x, seed=5, **kw), ours.generate(x, seed=5, **kw)
    assert a.shape == (4, 14) and torch.equal(a, b)
    greedy = ours.generate(x, max_new_tokens=8, do_sample=False)
    assert torch.equal(ours.generate(x, max_new_tokens=8, do_sample=True, top_k=1, seed=1), greedy)


def test_left_padded_prompts_are_refused(saved_txl):
    _, ours = saved_txl("div2")
    x = prompts()
    mask = torch.ones_like(x)
    mask[1, :2] = 0
    with pytest.raises(lmatlas.LmatlasError, match="Transformer-XL reads no attention mask"):
        ours.generate(x, attention_mask=mask, max_new_tokens=2)


@pytest.fixture(scope="module")
def word_model(saved_txl, tmp_path_factory):
    """The div2 model with a word-level tokenizer of Shakespeare's 99 commonest words."""
    import shutil

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    _, folder = saved_txl("div2", folder=True)
    dst = tmp_path_factory.mktemp("txl-words") / "model"
    shutil.copytree(folder, dst)
    text = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:20000]
    words = [w for w, _ in Counter(text.split()).most_common(VOCAB - 2)]
    tok = Tokenizer(models.WordLevel({"<eos>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}},
                                     unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # words joined by spaces
    tok.save(str(dst / "tokenizer.json"))
    (dst / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<eos>", "unk_token": "<unk>"}))
    return dst


TEXTS = ["First Citizen: Before we proceed any further", "You are all resolved rather to die than"]


def reference_texts(ref, folder, texts, **kwargs) -> list[str]:
    tok = transformers().AutoTokenizer.from_pretrained(folder)
    out = []
    for text in texts:
        x = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            seq = ref.generate(x, use_cache=False, **kwargs)[0]
        full, prompt = (tok.decode(ids, skip_special_tokens=True) for ids in (seq.tolist(), x[0].tolist()))
        out.append(text + full[len(prompt):])  # the new text as transformers' pipeline cuts it
    return out


def test_text_generation_pipeline(word_model, saved_txl):
    """transformers' own text-generation pipeline cannot run Transformer-XL (it passes an
    attention mask the model does not take): the reference is its tokenizer and generate. Prompts
    of different lengths go one at a time (there is no mask to pad them with)."""
    ref, _ = saved_txl("div2")
    expected = reference_texts(ref, word_model, TEXTS, do_sample=False, max_new_tokens=8)
    pipe = lmatlas.pipeline("text-generation", str(word_model))
    for batch_size in (1, 2):
        got = pipe(TEXTS, do_sample=False, max_new_tokens=8, batch_size=batch_size)
        assert [r[0]["generated_text"] for r in got] == expected
    beams = pipe(TEXTS[0], num_beams=3, max_new_tokens=6, do_sample=False)
    assert beams[0]["generated_text"] == reference_texts(ref, word_model, TEXTS[:1], num_beams=3, max_new_tokens=6,
                                                         do_sample=False)[0]


def test_lmatlas_run_text_generation(word_model, saved_txl, capsys):
    ref, _ = saved_txl("div2")
    assert main(["run", "text-generation", "-m", str(word_model), "--max-new-tokens", "5", "--no-do-sample",
                 *TEXTS]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = reference_texts(ref, word_model, TEXTS, do_sample=False, max_new_tokens=5)
    assert [r["output"][0]["generated_text"] for r in rows] == expected


def test_a_pickled_vocabulary_is_refused(tmp_path):
    (tmp_path / "vocab.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(lmatlas.LmatlasError, match="vocab.pkl is a pickled Python object"):
        lmatlas.load_tokenizer(tmp_path)
