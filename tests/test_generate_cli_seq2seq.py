"""`lmatlas generate` on encoder-decoders: tiny T5, Marian and mBART-50 models with random weights
and real SentencePiece tokenizers (trained on SST-2): text in, summary / translation out."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lmatlas
from lmatlas.cli import main
from lmatlas.tokenizer import load_tokenizer

from .reference import randomize, transformers
from .helpers_tokenizer import MARIAN_CONFIG, spm_files  # noqa: F401  (the fixture)

TEXT = "the film is a charming and often affecting journey ."
_small = dict(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=2,
              encoder_ffn_dim=40, decoder_ffn_dim=40, max_position_embeddings=64)  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory, spm_files):  # noqa: F811
    tf = transformers()
    root = tmp_path_factory.mktemp("seq2seq_cli")
    out = {}

    def save(name, model, files, tokenizer_config=None):
        folder = root / name
        randomize(model, seed=3)
        model.tie_weights()
        model.save_pretrained(folder)
        for f in files:
            shutil.copy(f, folder / f.name)
        if tokenizer_config:
            (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        out[name] = folder

    torch.manual_seed(0)
    t5 = tf.T5Config(vocab_size=800, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4, decoder_start_token_id=0)
    save("t5", tf.T5ForConditionalGeneration(t5).eval(), [spm_files["t5"]])
    vocab = json.loads(spm_files["vocab"].read_text())
    pad, eos = vocab["<pad>"], vocab["</s>"]
    marian = tf.MarianConfig(vocab_size=len(vocab), pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=eos,
                             forced_eos_token_id=eos, scale_embedding=True, **_small)
    save("marian", tf.MarianMTModel(marian).eval(), [spm_files["source"], spm_files["target"], spm_files["vocab"]],
         MARIAN_CONFIG)
    mbart_tokenizer = {"tokenizer_class": "MBart50Tokenizer", "src_lang": "en_XX"}
    mbart = tf.MBartConfig(vocab_size=727 + 27, scale_embedding=True, **_small)  # mBART-50's extra codes
    save("mbart50", tf.MBartForConditionalGeneration(mbart).eval(), [spm_files["mbart"]], mbart_tokenizer)
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(capsys, *argv):
    code = main(["generate", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _expected(folder, text=TEXT, src_lang=None, **kw):
    model, tok = lmatlas.load(folder), load_tokenizer(folder)
    if src_lang:
        tok.src_lang = src_lang
    out = model.generate(torch.tensor([tok.encode(text)]), **kw)
    return [tok.decode(row[1:].tolist(), skip_special_tokens=True) for row in out]


def test_t5_greedy(folders, capsys):
    code, out, _ = _run(capsys, "--model", folders["t5"], f"summarize: {TEXT}", "--max-new-tokens", 9)
    assert code == 0
    assert out == _expected(folders["t5"], f"summarize: {TEXT}", max_new_tokens=9)[0] + "\n"


def test_marian_beams_match_transformers(folders, capsys):
    """The whole way against transformers: MarianTokenizer, MarianMTModel.generate, decode."""
    tf = transformers()
    args = dict(max_new_tokens=8, num_beams=3, length_penalty=0.6, no_repeat_ngram_size=2)
    code, out, _ = _run(capsys, "--model", folders["marian"], TEXT, "--max-new-tokens", 8, "--num-beams", 3,
                        "--length-penalty", 0.6, "--no-repeat-ngram-size", 2)
    assert code == 0
    tok = tf.MarianTokenizer.from_pretrained(folders["marian"])
    ref = tf.MarianMTModel.from_pretrained(folders["marian"]).eval()
    with torch.no_grad():
        ids = ref.generate(**tok([TEXT], return_tensors="pt"), **args)
    assert out == tok.decode(ids[0], skip_special_tokens=True) + "\n"


def test_stream_prints_the_same_text(folders, capsys):
    _, plain, _ = _run(capsys, "--model", folders["marian"], TEXT, "--max-new-tokens", 10)
    _, streamed, _ = _run(capsys, "--model", folders["marian"], TEXT, "--max-new-tokens", 10, "--stream")
    assert streamed == plain


def test_mbart50_languages(folders, capsys):
    folder = folders["mbart50"]
    code, out, _ = _run(capsys, "--model", folder, TEXT, "--src-lang", "en_XX", "--tgt-lang", "ro_RO",
                        "--max-new-tokens", 6, "--num-beams", 2)
    assert code == 0
    ro = load_tokenizer(folder).lang_code_to_id["ro_RO"]
    assert out == _expected(folder, src_lang="en_XX", max_new_tokens=6, num_beams=2, forced_bos_token_id=ro)[0] + "\n"
    model, tok = lmatlas.load(folder), load_tokenizer(folder)
    first = model.generate(torch.tensor([tok.encode(TEXT)]), max_new_tokens=2, forced_bos_token_id=ro)[0, 1]
    assert int(first) == ro


@pytest.mark.parametrize(
    "model,args,match",
    [
        ("marian", ["--chat"], "--chat is for decoder models"),
        ("t5", ["--src-lang", "en_XX"], "--src-lang and --tgt-lang are for mBART"),
        ("mbart50", ["--tgt-lang", "xx_YY"], "--tgt-lang 'xx_YY' is not one of the model's language codes"),
        ("t5", ["--max-new-tokens", -2], "--max-new-tokens must be >= 0"),
        ("marian", ["--num-beams", 0], "--num-beams must be a whole number >= 1"),
    ],
)
def test_bad_arguments(folders, capsys, model, args, match):
    code, _, err = _run(capsys, "--model", folders[model], TEXT, *args)
    assert code == 1
    assert match in err
