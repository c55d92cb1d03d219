"""summarization, translation and text2text-generation against transformers.pipeline.

Tiny random-weight BART, T5, Pegasus, Marian and mBART(-50) models that transformers writes, with
real tokenizers trained on SST-2: a byte-level BPE for BART, SentencePiece models for the others.
Outputs must be identical: texts and token ids (transformers' beam search and greedy decoding are
deterministic). Both pipelines run each case on one text and on a list of texts of different
lengths (lmatlas batches them with padding; transformers runs them one by one).
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

import lmatlas

from .helpers_pipelines import SENTENCES, assert_same, error, hf_pipeline, train_tokenizers  # noqa: F401
from .helpers_tokenizer import MARIAN_CONFIG, spm_files  # noqa: F401  (the fixtures)
from .reference import randomize, restore_fixed_positions, transformers

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # Short outputs of long texts, on purpose; test_length_warnings checks the warning.
    pytest.mark.filterwarnings("ignore:an input has .* tokens and a translation may have"),
]

TEXTS = [
    "the film is a charming and often affecting journey .",
    "A quietly devastating portrait of grief.",
    SENTENCES[1],
]
_BART_SHAPE = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                   encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64)  # fmt: skip
T5_TASKS = {
    "summarization": {"prefix": "summarize: ", "min_length": 4, "no_repeat_ngram_size": 2},
    "translation_en_to_de": {"prefix": "translate English to German: "},
    "translation_en_to_fr": {"prefix": "translate English to French: ", "num_beams": 2},
}


def _save(root, name, model, files=(), tokenizer_config=None, generation=None, seed=0):
    randomize(model, seed=seed, std=0.3)
    restore_fixed_positions(model)
    model.tie_weights()
    for key, value in (generation or {}).items():
        setattr(model.generation_config, key, value)
    folder = root / name
    model.save_pretrained(folder)
    for f in files:
        shutil.copy(f, folder / f.name)
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, spm_files):  # noqa: F811
    tf = transformers()
    root = tmp_path_factory.mktemp("seq2seq_pipelines")
    bpe = train_tokenizers(root / "tok")["bpe"]
    torch.manual_seed(0)
    out = {}
    # BART as bart-large-cnn sets it up: beams, lengths and n-grams in generation_config.json, and
    # the same in task_specific_params["summarization"].
    summary = dict(num_beams=2, min_length=3, max_length=10, no_repeat_ngram_size=3, length_penalty=2.0,
                   early_stopping=True)  # fmt: skip
    bart = tf.BartConfig(vocab_size=905, task_specific_params={"summarization": summary}, **_BART_SHAPE)
    out["bart"] = _save(root, "bart", tf.BartForConditionalGeneration(bart).eval(),
                        [bpe / "vocab.json", bpe / "merges.txt"],
                        {"tokenizer_class": "BartTokenizer", "model_max_length": 64}, summary)  # fmt: skip
    t5 = tf.T5Config(vocab_size=800, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4, decoder_start_token_id=0,
                     task_specific_params=T5_TASKS)  # fmt: skip
    out["t5"] = _save(root, "t5", tf.T5ForConditionalGeneration(t5).eval(), [spm_files["t5"]],
                      {"model_max_length": 64}, seed=1)  # fmt: skip
    # A Switch Transformer with T5's tokenizer: 4 experts in layer 1 of each stack.
    switch = tf.SwitchTransformersConfig(vocab_size=800, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_decoder_layers=2,
                                         num_heads=4,
                                         decoder_start_token_id=0, num_experts=4, num_sparse_encoder_layers=1,
                                         num_sparse_decoder_layers=1)  # fmt: skip
    out["switch"] = _save(root, "switch", tf.SwitchTransformersForConditionalGeneration(switch).eval(),
                          [spm_files["t5"]], {"model_max_length": 64, "tokenizer_class": "T5Tokenizer"},
                          seed=2)  # fmt: skip
    # Pegasus as pegasus-xsum sets it up (beams, a length penalty, a length limit); spiece.model
    # and tokenizer_config.json but no tokenizer.json, so lmatlas builds the tokenizer itself.
    pegasus = tf.PegasusConfig(vocab_size=803, **_BART_SHAPE)  # 103 reserved ids, then 700 pieces
    out["pegasus"] = _save(root, "pegasus", tf.PegasusForConditionalGeneration(pegasus).eval(), [spm_files["pegasus"]],
                           {"tokenizer_class": "PegasusTokenizer", "model_max_length": 64},
                           dict(num_beams=2, length_penalty=0.6, max_length=12), seed=4)  # fmt: skip
    # Big Bird-Pegasus with Pegasus' tokenizer: the encoder's attention block-sparse on sources
    # past 28 tokens (blocks of 4, one random block).
    bbp = tf.BigBirdPegasusConfig(vocab_size=803, block_size=4, num_random_blocks=1, **_BART_SHAPE)
    out["bigbird-pegasus"] = _save(root, "bigbird-pegasus", tf.BigBirdPegasusForConditionalGeneration(bbp).eval(),
                                   [spm_files["pegasus"]], {"tokenizer_class": "PegasusTokenizer", "model_max_length": 64},
                                   seed=5)  # fmt: skip
    vocab = json.loads(spm_files["vocab"].read_text())
    pad, eos = vocab["<pad>"], vocab["</s>"]
    marian = tf.MarianConfig(vocab_size=len(vocab), pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=eos,
                             forced_eos_token_id=eos, scale_embedding=True, **_BART_SHAPE)  # fmt: skip
    out["marian"] = _save(root, "marian", tf.MarianMTModel(marian).eval(),
                          [spm_files["source"], spm_files["target"], spm_files["vocab"]], MARIAN_CONFIG,
                          {"bad_words_ids": [[pad]]}, seed=2)  # fmt: skip
    for name, cls, codes, seed in (("mbart50", "MBart50Tokenizer", 52, 0), ("mbart", "MBartTokenizer", 25, 2)):
        # 700 pieces, fairseq's offset of one, the language codes and <mask>
        config = tf.MBartConfig(vocab_size=702 + codes, scale_embedding=True, **_BART_SHAPE)
        out[name] = _save(root, name, tf.MBartForConditionalGeneration(config).eval(), [spm_files["mbart"]],
                          {"tokenizer_class": cls, "src_lang": "en_XX"}, seed=seed)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def pipes(folders):
    """(transformers', lmatlas') pipeline for a task on a model, built once each."""
    built: dict = {}

    def get(task, name, **kwargs):
        key = (task, name, tuple(sorted(kwargs.items())))
        if key not in built:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built[key] = (hf_pipeline(task, folders[name], **kwargs),
                              lmatlas.pipeline(task, folders[name], **kwargs))  # fmt: skip
        return built[key]

    return get


def as_lists(value):
    """transformers' token ids are tensors; lmatlas' are lists."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: as_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_lists(v) for v in value]
    return value


def same(hf, ours, texts=TEXTS, **options):
    """Both pipelines on one text and on the list, with ``options``; returns lmatlas' outputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [hf(texts[0], **options), hf(list(texts), **options)]
        got = [ours(texts[0], **options), ours(list(texts), **options)]
    assert_same(as_lists(expected), got)
    return got


CASES = [
    ("summarization", "bart", {}),  # the model's generation settings: 2 beams, 3 to 10 tokens
    ("summarization", "bart", dict(num_beams=1, max_length=12)),
    ("summarization", "bart", dict(num_beams=3, num_return_sequences=2, max_length=9, return_tensors=True)),
    ("summarization", "bart", dict(num_beams=3, min_length=8, max_length=11, no_repeat_ngram_size=2, return_text=True)),
    ("summarization", "bart", dict(num_beams=3, num_return_sequences=3, length_penalty=0.5, early_stopping=False,
                                   max_length=12, clean_up_tokenization_spaces=True)),
    ("text2text-generation", "bart", dict(max_new_tokens=8)),
    ("text2text-generation", "bart", dict(max_new_tokens=8, batch_size=2)),  # both pad batches of two
    ("summarization", "t5", dict(max_new_tokens=9, num_beams=1)),  # "summarize: " and the task's n-grams
    ("summarization", "t5", dict(max_new_tokens=8, num_beams=3, return_tensors=True)),
    ("translation_en_to_de", "t5", dict(max_new_tokens=10)),
    ("translation_en_to_fr", "t5", dict(max_new_tokens=8, return_tensors=True)),  # and the task's 2 beams
    ("text2text-generation", "t5", dict(max_new_tokens=8, num_beams=2, num_return_sequences=2)),
    ("text2text-generation", "switch", dict(max_new_tokens=8)),
    ("text2text-generation", "switch", dict(max_new_tokens=7, num_beams=3)),
    ("summarization", "pegasus", {}),  # the model's settings: 2 beams, at most 12 tokens
    ("summarization", "pegasus", dict(num_beams=1, max_new_tokens=8, no_repeat_ngram_size=2, return_tensors=True)),
    ("translation", "marian", dict(max_new_tokens=10, num_beams=1)),
    ("translation_en_to_de", "marian", dict(max_new_tokens=8, num_beams=3, num_return_sequences=2)),
    ("translation", "marian", dict(max_new_tokens=8, return_tensors=True, no_repeat_ngram_size=1)),
]


@pytest.mark.parametrize("task,name,options", CASES, ids=[f"{t}-{n}-{i}" for i, (t, n, _) in enumerate(CASES)])
def test_same_as_transformers(pipes, task, name, options):
    hf, ours = pipes(task, name)
    same(hf, ours, **options)


def test_bigbird_pegasus_summarizes_long_sources(folders):
    """Big Bird-Pegasus on sources long enough for its sparse encoder (past 28 tokens), one at a
    time: transformers switches a model to full attention for good once it meets a shorter
    source, so no short one is given here. (Sources batched together are padded to the longest,
    which moves the block boundaries and the global last block: the sparse pattern, and so the
    numbers, depend on the batch in both libraries.)"""
    hf = hf_pipeline("summarization", folders["bigbird-pegasus"])
    ours = lmatlas.pipeline("summarization", folders["bigbird-pegasus"])
    sources = SENTENCES[:3]
    assert all(28 < len(ours.tokenizer(s)["input_ids"]) <= 64 for s in sources)
    for source in sources:
        same(hf, ours, [source], max_new_tokens=8, num_beams=2)
    assert hf.model.model.encoder.attention_type == "block_sparse"


def test_generation_settings_from_config_json(folders, tmp_path):
    """Without a generation_config.json, the generation settings config.json holds count (older
    checkpoints keep them there)."""
    folder = tmp_path / "bart-old"
    shutil.copytree(folders["bart"], folder)
    (folder / "generation_config.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    config.update(num_beams=3, max_length=8, no_repeat_ngram_size=2)
    (folder / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = hf_pipeline("text2text-generation", folder)
    got = same(hf, lmatlas.pipeline("text2text-generation", folder), return_tensors=True)
    assert all(len(r["generated_token_ids"]) <= 8 for r in got[1])


def test_plain_translation_takes_the_first_pair(pipes, folders):
    """As transformers: 'translation' on a model with translation entries uses the first (with
    a warning), here T5's English to German prefix."""
    with pytest.warns(UserWarning, match="using the model's 'translation_en_to_de'"):
        ours = lmatlas.pipeline("translation", folders["t5"])
    hf, _ = pipes("translation", "t5")
    same(hf, ours, max_new_tokens=8)
    _, german = pipes("translation_en_to_de", "t5")
    assert ours(TEXTS, max_new_tokens=8) == german(TEXTS, max_new_tokens=8)


@pytest.mark.parametrize("name", ["mbart50", "mbart"])
def test_mbart_languages(pipes, name):
    hf, ours = pipes("translation", name, src_lang="en_XX", tgt_lang="ro_RO")
    got = same(hf, ours, max_new_tokens=8, num_beams=2, return_tensors=True)
    ro = ours.tokenizer.lang_code_to_id["ro_RO"]
    assert all(r["translation_token_ids"][1] == ro for r in got[1])
    # Languages given with the call.
    same(hf, ours, max_new_tokens=6, src_lang="de_DE", tgt_lang="fr_XX")
    assert ours.tokenizer.src_lang == "en_XX"  # the call leaves the tokenizer as it was


def test_truncation(pipes):
    """T5's tokenizer reads at most 64 tokens: truncation=True cuts the text there, as
    transformers does; without it the text is refused (transformers runs it anyway)."""
    hf, ours = pipes("summarization", "t5")
    long_text = " ".join(SENTENCES)
    same(hf, ours, [long_text, TEXTS[0]], max_new_tokens=6, truncation=True)
    msg = error(ours, long_text, max_new_tokens=6)
    assert "tokens long with the prefix, more than the 64 the model reads; pass truncation=True" in msg


# -- what lmatlas does its own way ---------------------------------------------------------------


def test_token_ids_do_not_depend_on_the_batch(pipes):
    """Each text's token ids stop at its own longest output, whatever it is batched with
    (transformers pads them to the longest output of the batch)."""
    _, ours = pipes("summarization", "bart")
    # An end token the random model writes early, so that outputs end at different steps.
    [probe] = ours(TEXTS[2], num_beams=1, max_length=12, return_tensors=True, forced_eos_token_id=None)
    stop = probe["summary_token_ids"][3]
    options = dict(num_beams=3, num_return_sequences=2, max_length=12, eos_token_id=stop, return_tensors=True)
    batched = ours(TEXTS, **options)
    alone = [ours(text, **options) for text in TEXTS]
    assert batched == alone
    hf, _ = pipes("summarization", "bart")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert as_lists([hf(text, **options) for text in TEXTS]) == alone
    assert len({len(r["summary_token_ids"]) for rows in alone for r in rows}) > 1


def test_return_text_false_gives_the_token_ids(pipes):
    _, ours = pipes("text2text-generation", "t5")
    ids = ours(TEXTS[0], max_new_tokens=5, return_text=False)
    assert ids == ours(TEXTS[0], max_new_tokens=5, return_tensors=True)
    assert list(ids[0]) == ["generated_token_ids"]
    assert "either the text or the token ids" in error(ours, "x", return_text=True, return_tensors=True)
    assert "nothing is left to return" in error(ours, "x", return_text=False, return_tensors=False)


def test_mbart_two_letter_languages(pipes, folders):
    """translation_en_to_ro names mBART's en_XX and ro_RO (transformers looks 'en' up as a token
    and gets the unknown token)."""
    _, coded = pipes("translation", "mbart50", src_lang="en_XX", tgt_lang="ro_RO")
    named = lmatlas.pipeline("translation_en_to_ro", folders["mbart50"])
    assert named(TEXTS, max_new_tokens=6) == coded(TEXTS, max_new_tokens=6)


def test_languages_choose_the_t5_task(pipes):
    """On a one-pair model, src_lang/tgt_lang choose its task_specific_params entry."""
    _, german = pipes("translation_en_to_de", "t5")
    _, french = pipes("translation_en_to_fr", "t5")
    assert german(TEXTS, max_new_tokens=6, tgt_lang="fr") == french(TEXTS, max_new_tokens=6)
    assert german(TEXTS, max_new_tokens=6, tgt_lang="xx") == german(TEXTS, max_new_tokens=6)


def test_max_length_replaces_the_default_new_tokens(pipes):
    """T5's generation settings give no length, so 256 new tokens are the default; a max_length
    given to the call replaces them (transformers ignores it, with a warning)."""
    _, ours = pipes("text2text-generation", "t5")
    [out] = ours(TEXTS[0], max_length=7, num_beams=1, return_tensors=True)
    assert len(out["generated_token_ids"]) == 7


def test_stop_sequence(pipes):
    """The output ends once its text holds the stop sequence (transformers ends it at the stop
    sequence's first token instead of the model's end token)."""
    _, ours = pipes("text2text-generation", "t5")
    [full] = ours(TEXTS[1], max_new_tokens=10, num_beams=1)
    words = full["generated_text"].split()
    # A word that first shows up after the first word, and not inside the text before it.
    at = next(i for i in range(1, len(words)) if words[i] not in " ".join(words[:i]))
    [cut] = ours(TEXTS[1], max_new_tokens=10, num_beams=1, stop_sequence=words[at])
    assert words[at] in cut["generated_text"] and len(cut["generated_text"]) < len(full["generated_text"])
    assert full["generated_text"].startswith(cut["generated_text"])


def test_length_warnings(pipes):
    _, summarize = pipes("summarization", "bart")
    with pytest.warns(UserWarning, match="min_length=20 is more than a summary may have"):
        summarize(TEXTS[0], min_length=20, max_length=9, num_beams=1)
    with pytest.warns(UserWarning, match="summaries are usually shorter than their text"):
        summarize(TEXTS[1], max_new_tokens=30, num_beams=1)
    _, translate = pipes("translation", "marian")
    with pytest.warns(UserWarning, match="may be cut short; consider a larger max_new_tokens"):
        translate(TEXTS[0], max_new_tokens=4, num_beams=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summarize(TEXTS[0])  # the model's own lengths: no warning
        translate(TEXTS[0], max_new_tokens=40, num_beams=1)


def test_cli(folders, capsys):
    from lmatlas.cli import main

    ours = lmatlas.pipeline("translation", folders["mbart50"])
    assert main(["run", "translation", "-m", str(folders["mbart50"]), "--src-lang", "en_XX", "--tgt-lang", "ro_RO",
                 "--max-new-tokens", "6", "--num-beams", "2", *TEXTS[:2]]) == 0  # fmt: skip
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = ours(TEXTS[:2], src_lang="en_XX", tgt_lang="ro_RO", max_new_tokens=6, num_beams=2)
    assert [r["output"] for r in rows] == expected
    assert main(["run", "summarization", "-m", str(folders["t5"]), "--max-new-tokens", "5", "--return-tensors",
                 TEXTS[0]]) == 0  # fmt: skip
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["output"] == lmatlas.pipeline("summarization", folders["t5"])([TEXTS[0]], max_new_tokens=5,
                                                                              return_tensors=True)[0]  # fmt: skip
    assert main(["run", "text2text-generation", "-m", str(folders["marian"]), "--num-beams", "3",
                 "--num-return-sequences", "2", "--max-new-tokens", "4", TEXTS[1]]) == 0  # fmt: skip
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["output"] == lmatlas.pipeline("text2text-generation", folders["marian"])(
        TEXTS[1], num_beams=3, num_return_sequences=2, max_new_tokens=4
    )


# -- mistakes ------------------------------------------------------------------------------------


def test_empty_text(pipes):
    _, ours = pipes("summarization", "bart")
    assert error(ours, "") == "the text is empty"
    assert error(ours, [TEXTS[0], "  "]) == "input 1: the text is empty"


def test_mbart_language_codes(folders):
    translate = lmatlas.pipeline("translation", folders["mbart50"])
    msg = error(translate, TEXTS[0])
    assert "needs the target language: give tgt_lang=" in msg and "ro_RO" in msg
    msg = error(translate, TEXTS[0], tgt_lang="xx_YY")
    assert "tgt_lang 'xx_YY' is not one of the model's language codes: ar_AR, cs_CZ" in msg
    msg = error(lmatlas.pipeline("translation_en_to_zz", folders["mbart50"]), TEXTS[0])
    assert "tgt_lang 'zz' is not one of the model's language codes" in msg


def test_text_too_long(folders):
    summarize = lmatlas.pipeline("summarization", folders["bart"])
    msg = error(summarize, [TEXTS[0], " ".join(SENTENCES * 2)])
    assert msg.startswith("input 1: the text is ") and "more than the 64 the model reads; pass truncation=True" in msg
    assert summarize(" ".join(SENTENCES * 2), truncation=True, num_beams=1)[0]["summary_text"] is not None
