"""An encoder-decoder's target language (``generation.language``) on tiny mBART (cc25) and
mBART-50 models: ``lmatlas generate --tgt-lang`` and the translation pipeline take the same
``generate()`` arguments from it and give transformers' translation pipeline's tokens."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

import lmatlas
from lmatlas.cli import main
from lmatlas.generation import language_code, target_language
from lmatlas.tokenizer import load_tokenizer

from .helpers_pipelines import hf_pipeline
from .helpers_tokenizer import spm_files  # noqa: F401  (the fixture)
from .reference import randomize, transformers
from .test_generate_cli_seq2seq import TEXT
from .test_generate_cli_seq2seq import _small as _SMALL

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:an input has .* tokens and a translation may have"),  # short on purpose
]

ARGS = dict(max_new_tokens=6, num_beams=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, spm_files):  # noqa: F811
    """mBART-50 (the code before the text) and mBART (cc25: the code after </s>)."""
    tf = transformers()
    root = tmp_path_factory.mktemp("languages")
    out = {}
    for name, cls, codes, seed in (("mbart50", "MBart50Tokenizer", 52, 5), ("mbart", "MBartTokenizer", 25, 6)):
        torch.manual_seed(seed)
        # 700 pieces, fairseq's offset of one, the language codes and <mask>
        model = tf.MBartForConditionalGeneration(tf.MBartConfig(vocab_size=702 + codes, scale_embedding=True, **_SMALL))
        randomize(model.eval(), seed=seed, std=0.3)
        model.tie_weights()
        folder = root / name
        model.save_pretrained(folder)
        shutil.copy(spm_files["mbart"], folder / spm_files["mbart"].name)
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls, "src_lang": "en_XX"}))
        out[name] = folder
    return out


def _transformers_tokens(folder, src_lang: str, tgt_lang: str) -> list[int]:
    hf = hf_pipeline("translation", folder, src_lang=src_lang, tgt_lang=tgt_lang)
    return [int(t) for t in hf(TEXT, return_tensors=True, **ARGS)[0]["translation_token_ids"]]


@pytest.mark.parametrize("name", ["mbart50", "mbart"])
def test_cli_and_pipeline_give_transformers_tokens(folders, capsys, name):
    folder = folders[name]
    expected = _transformers_tokens(folder, "en_XX", "ro_RO")
    tok = load_tokenizer(folder)
    ro = tok.lang_code_to_id["ro_RO"]
    assert target_language(tok, "ro_RO") == {"forced_bos_token_id": ro}
    assert expected[1] == ro  # after the decoder start token
    assert tok.decode(expected, skip_special_tokens=True).strip()  # some text to compare

    # The pipeline path.
    ours = lmatlas.pipeline("translation", folder)
    got = ours(TEXT, src_lang="en_XX", tgt_lang="ro_RO", return_tensors=True, **ARGS)[0]["translation_token_ids"]
    assert [int(t) for t in got] == expected

    # The CLI path prints the same tokens' text.
    assert main(["generate", "--model", str(folder), TEXT, "--src-lang", "en_XX", "--tgt-lang", "ro_RO",
                 "--max-new-tokens", "6", "--num-beams", "2"]) == 0  # fmt: skip
    assert capsys.readouterr().out == tok.decode(expected[1:], skip_special_tokens=True) + "\n"


def test_other_source_language(folders, capsys):
    """The source code goes around the text: another source gives transformers' other tokens."""
    folder = folders["mbart"]
    expected = _transformers_tokens(folder, "de_DE", "fr_XX")
    assert main(["generate", "--model", str(folder), TEXT, "--src-lang", "de", "--tgt-lang", "fr",
                 "--max-new-tokens", "6", "--num-beams", "2"]) == 0  # fmt: skip
    assert capsys.readouterr().out == load_tokenizer(folder).decode(expected[1:], skip_special_tokens=True) + "\n"


def test_language_codes(folders):
    tok = load_tokenizer(folders["mbart50"])
    assert language_code(tok, "ro", "tgt_lang") == "ro_RO"  # the one code that begins with it
    assert language_code(tok, "en_XX", "src_lang") == "en_XX"
    with pytest.raises(lmatlas.LmatlasError, match="tgt_lang 'zz' is not one of the model's language codes: ar_AR"):
        target_language(tok, "zz")
    without_codes = SimpleNamespace(language_layout=None, lang_code_to_id={})  # as Marian's
    with pytest.raises(lmatlas.LmatlasError, match="tgt_lang is for models with language codes"):
        target_language(without_codes, "ro_RO")
