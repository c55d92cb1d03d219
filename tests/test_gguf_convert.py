"""`lmatlas convert`: a model lmatlas reads, written as GGUF (f32, f16, q8_0) or as a Hugging Face
folder, then read back by lmatlas and by transformers; and what it refuses, one sentence each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lmatlas
from lmatlas.cli import main

from .paths import data_file
from .reference import randomize, require, transformers
from .test_gguf_written import MERGES, reference_model, vocabulary
from .test_gguf_written import write as write_llama

TOL = 1e-4
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
TEXTS = ["the thin cat in the hat", "  a\ttab, 12 digits and ü", "<|im_start|>the<|im_end|>"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A llama GGUF file (some matrices Q8_0) with a byte-level BPE tokenizer and a chat template."""
    folder = tmp_path_factory.mktemp("source")
    return write_llama(folder / "tiny.gguf", reference_model(len(vocabulary()), tied=False), template=TEMPLATE)


def small_llama(folder, **config):
    """A random one-layer Llama saved in ``folder`` (config.json and weights, no tokenizer)."""
    tf = transformers()
    config = tf.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                            num_attention_heads=4, **config)  # fmt: skip
    tf.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def run(*argv) -> int:
    return main(["convert", *map(str, argv)])


def batch():
    ids = torch.randint(3, len(vocabulary()), (2, 9), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return ids, mask


def logits(model, ids, mask):
    with torch.no_grad():
        if isinstance(model, lmatlas.model.LmatlasModel):
            return model(ids, attention_mask=mask).logits
        return model(input_ids=ids, attention_mask=mask).logits


def test_f16_reads_back_in_lmatlas_and_transformers(source, tmp_path, capsys):
    out = tmp_path / "tiny.f16.gguf"
    assert run(source, "--to", "gguf", "--dtype", "f16", "-o", out) == 0
    assert capsys.readouterr().out.strip() == str(out)
    gguf = require("gguf")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"

    ours = lmatlas.load(out)
    ref = transformers().AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name).eval()
    # The same dequantized tensors (q and k un-permuted alike), to the bit.
    state = ref.state_dict()
    layer = ours.backbone.layers[1]
    q, k, v = layer.attn.qkv.weight.split(layer.attn.split)
    assert torch.equal(q, state["model.layers.1.self_attn.q_proj.weight"])
    assert torch.equal(k, state["model.layers.1.self_attn.k_proj.weight"])
    assert torch.equal(v, state["model.layers.1.self_attn.v_proj.weight"])
    assert torch.equal(ours.head.decoder.weight, state["lm_head.weight"])
    ids, mask = batch()
    got, want = logits(ours, ids, mask), logits(ref, ids, mask)
    assert (got - want)[mask.bool()].abs().max() <= TOL
    # and the model is the source's, to float16's rounding
    assert (got - logits(lmatlas.load(source), ids, mask))[mask.bool()].abs().max() < 0.02

    tokenizer, before = lmatlas.load_tokenizer(out), lmatlas.load_tokenizer(source)
    assert tokenizer(TEXTS)["input_ids"] == before(TEXTS)["input_ids"]
    assert tokenizer.chat_template == TEMPLATE
    assert tokenizer.special_tokens_map == before.special_tokens_map


def test_through_a_hugging_face_folder(source, tmp_path):
    """--to hf writes a folder (tokenizer.json included) that transformers loads; that folder,
    converted in turn, is the same GGUF model as the source converted directly."""
    folder = tmp_path / "hf"
    assert run(source, "--to", "hf", "-o", folder) == 0
    ids, mask = batch()
    want = logits(lmatlas.load(source), ids, mask)
    ref = transformers().AutoModelForCausalLM.from_pretrained(folder).eval()
    assert (logits(ref, ids, mask) - want)[mask.bool()].abs().max() <= TOL
    assert transformers().AutoTokenizer.from_pretrained(folder)(TEXTS)["input_ids"] == \
        lmatlas.load_tokenizer(source)(TEXTS)["input_ids"]  # fmt: skip
    assert lmatlas.load_tokenizer(folder).chat_template == TEMPLATE

    direct, through = tmp_path / "direct.gguf", tmp_path / "through.gguf"
    assert run(source, "--to", "gguf", "--dtype", "f32", "-o", direct) == 0
    assert run(folder, "--to", "gguf", "--dtype", "f32", "-o", through) == 0
    assert torch.equal(logits(lmatlas.load(direct), ids, mask), logits(lmatlas.load(through), ids, mask))
    assert lmatlas.load_tokenizer(through)(TEXTS)["input_ids"] == lmatlas.load_tokenizer(direct)(TEXTS)["input_ids"]


def test_gpt2_q8_0(tmp_path):
    """A GPT-2 folder (vocab.json and merges.txt: the byte alphabet and a few merges, as small
    files keep the test fast) written with Q8_0 matrices: lmatlas and transformers read the same
    model and the same token ids."""
    tf = transformers()
    tokens = vocabulary()
    config = tf.GPT2Config(vocab_size=len(tokens), n_embd=64, n_layer=2, n_head=4, n_positions=1024)
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(config).eval()
    randomize(model, seed=2)
    folder = tmp_path / "gpt2"
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")
    out = tmp_path / "gpt2.gguf"
    assert run(folder, "--to", "gguf", "--dtype", "q8_0", "-o", out) == 0
    gguf = require("gguf")
    assert {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}["blk.1.ffn_up.weight"] == "Q8_0"

    ours = lmatlas.load(out)
    ref = tf.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name).eval()
    ids = torch.randint(0, len(tokens), (2, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    got, want = logits(ours, ids, mask), logits(ref, ids, mask)
    assert (got - want)[mask.bool()].abs().max() <= TOL
    assert (got - logits(model, ids, mask))[mask.bool()].abs().max() < 0.1  # Q8_0 rounds each weight by up to 1/254 of its block's largest

    texts = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines()[:60]
    want_ids = lmatlas.load_tokenizer(folder)(texts)["input_ids"]
    assert lmatlas.load_tokenizer(out)(texts)["input_ids"] == want_ids
    assert tf.AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)(texts)["input_ids"] == want_ids


# -- refused ---------------------------------------------------------------------------------


def test_architecture_not_written(tmp_path, capsys):
    tf = transformers()
    folder = tmp_path / "opt"
    config = tf.OPTConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, ffn_dim=64,
                          word_embed_proj_dim=32)  # fmt: skip
    tf.OPTForCausalLM(config).save_pretrained(folder)
    assert run(folder, "--to", "gguf", "-o", tmp_path / "o.gguf") == 1
    assert "lmatlas writes GGUF files of the architectures llama, qwen2, gpt2, bloom, falcon, not opt" in \
        capsys.readouterr().err  # fmt: skip


def test_output_is_a_folder(source, tmp_path, capsys):
    assert run(source, "--to", "gguf", "-o", tmp_path) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path} is a folder; give the path of the .gguf file to write" in err
    assert "Traceback" not in err


def test_output_folder_missing(source, tmp_path, capsys):
    assert run(source, "--to", "gguf", "-o", tmp_path / "no" / "x.gguf") == 1
    assert f"{tmp_path / 'no'}: no such folder to write x.gguf into" in capsys.readouterr().err


def test_hf_output_is_a_file(source, tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert run(source, "--to", "hf", "-o", tmp_path / "f") == 1
    assert "is a file; a Hugging Face model is written as a folder" in capsys.readouterr().err


def test_bad_dtype(source, tmp_path, capsys):
    assert run(source, "--to", "gguf", "--dtype", "q4_k", "-o", tmp_path / "x.gguf") == 1
    assert "dtype 'q4_k' cannot be written to GGUF; use one of f32, f16, q8_0" in capsys.readouterr().err
    assert run(source, "--to", "hf", "--dtype", "f16", "-o", tmp_path / "h") == 1
    assert "--dtype is for --to gguf" in capsys.readouterr().err


def test_layout_gguf_cannot_express(tmp_path, capsys):
    """A Llama with biases on its projections (attention_bias): no such tensors in GGUF's llama."""
    folder = small_llama(tmp_path / "biased", attention_bias=True)
    assert run(folder, "--to", "gguf", "-o", tmp_path / "x.gguf") == 1
    assert "has no place in GGUF's llama layout" in capsys.readouterr().err
    # an activation GGUF's llama does not carry: refused, not written as SiLU
    folder = small_llama(tmp_path / "gelu", hidden_act="gelu")
    assert run(folder, "--to", "gguf", "-o", tmp_path / "x.gguf") == 1
    assert "GGUF's llama layout cannot express the model's activation='gelu'" in capsys.readouterr().err
    folder = small_llama(tmp_path / "scaled", rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert run(folder, "--to", "gguf", "-o", tmp_path / "x.gguf") == 1
    assert "GGUF's llama layout cannot express the model's rope_scaling=" in capsys.readouterr().err


def test_tokenizer_gguf_cannot_hold(tmp_path, capsys):
    """A WordPiece tokenizer (BERT's) beside a Llama: not a byte-level BPE."""
    folder = small_llama(tmp_path / "wp")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    assert run(folder, "--to", "gguf", "-o", tmp_path / "x.gguf") == 1
    assert "the tokenizer is a WordPiece model, not a byte-level or SentencePiece BPE" in capsys.readouterr().err


def test_no_tokenizer_is_a_notice(tmp_path, capsys):
    folder = small_llama(tmp_path / "bare")
    assert run(folder, "--to", "gguf", "-o", tmp_path / "bare.gguf") == 0
    assert "writing the model without a tokenizer" in capsys.readouterr().err
    assert lmatlas.load(tmp_path / "bare.gguf").config.vocab_size == 40
    np.testing.assert_equal(lmatlas.load(tmp_path / "bare.gguf").config.num_layers, 1)


def _written_configs(tf):
    return {
        "qwen2": (tf.Qwen2Config(vocab_size=60, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                 num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                                 rope_theta=5000.0, tie_word_embeddings=False), tf.Qwen2ForCausalLM),
        "bloom": (tf.BloomConfig(vocab_size=60, hidden_size=48, n_layer=2, n_head=6), tf.BloomForCausalLM),
        "falcon": (tf.FalconConfig(vocab_size=60, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                                   max_position_embeddings=64, rope_theta=5000.0, bos_token_id=1, eos_token_id=2),
                   tf.FalconForCausalLM),
    }  # fmt: skip


@pytest.mark.parametrize("arch", ["qwen2", "bloom", "falcon"])
def test_other_architectures_f32(tmp_path, arch):
    """Qwen2 (q/k/v biases, q and k stored unpermuted), BLOOM (q/k/v split from per head into
    all q, k, v) and Falcon-7B's layout: the folder's model, exactly, in GGUF."""
    tf = transformers()
    config, cls = _written_configs(tf)[arch]
    torch.manual_seed(0)
    model = cls(config).eval()
    randomize(model, seed=6)
    folder = tmp_path / arch
    model.save_pretrained(folder)
    out = tmp_path / f"{arch}.gguf"
    assert run(folder, "--to", "gguf", "--dtype", "f32", "-o", out) == 0
    ids = torch.randint(0, 60, (2, 9), generator=torch.Generator().manual_seed(7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    ref = tf.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name).eval()
    want = logits(model, ids, mask)
    for reader in (lmatlas.load(out), ref):
        assert (logits(reader, ids, mask) - want)[mask.bool()].abs().max() <= TOL


def test_falcon_40b_layout_not_written(tmp_path, capsys):
    tf = transformers()
    config = tf.FalconConfig(vocab_size=60, hidden_size=48, num_hidden_layers=1, num_attention_heads=6,
                             num_kv_heads=2, new_decoder_architecture=True)  # fmt: skip
    tf.FalconForCausalLM(config).save_pretrained(tmp_path / "f")
    assert run(tmp_path / "f", "--to", "gguf", "-o", tmp_path / "f.gguf") == 1
    assert "the model's tensor transformer.h.0.ln_attn.weight has no place in GGUF's falcon layout" in \
        capsys.readouterr().err  # fmt: skip


def test_sentencepiece_tokenizer(tmp_path):
    """A Llama folder whose tokenizer.json is SentencePiece BPE with byte fallback (as transformers
    converts a Llama 2 tokenizer.model; here one trained on Shakespeare): written as a GGUF
    tokenizer of kind llama (scores, no merges), it gives the folder's ids, in lmatlas and in
    transformers."""
    spm = require("sentencepiece")
    tf = transformers()
    lines = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in lines[:3000] if line.strip()]), model_prefix=str(tmp_path / "sp"),
        vocab_size=700, model_type="bpe", byte_fallback=True, minloglevel=2,
    )  # fmt: skip
    folder = tmp_path / "llama"
    tf.LlamaTokenizerFast(vocab_file=str(tmp_path / "sp.model"), from_slow=True, legacy=True,
                          add_prefix_space=True).save_pretrained(folder)  # fmt: skip
    config = tf.LlamaConfig(vocab_size=700, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                            num_attention_heads=4)  # fmt: skip
    tf.LlamaForCausalLM(config).save_pretrained(folder)
    out = tmp_path / "spm.gguf"
    assert run(folder, "--to", "gguf", "-o", out) == 0

    texts = lines[5000:5100] + [line.split("\t")[0] for line in
                                data_file("sst2", "dev.tsv").read_text(encoding="utf-8").splitlines()[1:101]]
    want = lmatlas.load_tokenizer(folder)(texts)["input_ids"]
    assert want == tf.AutoTokenizer.from_pretrained(folder)(texts)["input_ids"]
    assert lmatlas.load_tokenizer(out)(texts)["input_ids"] == want
    assert tf.AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)(texts)["input_ids"] == want


def test_bos_and_eos_flags_from_what_the_tokenizer_adds():
    """add_bos_token / add_eos_token are read off an encoded text, bos and eos told apart by
    place even when they are one token (GPT-2's <|endoftext|>)."""
    from tokenizers import Tokenizer, models, processors

    from lmatlas.gguf.writer import _added_around

    tok = Tokenizer(models.BPE({"e": 0, "<|endoftext|>": 1}, []))  # no "a": another text is tried
    for single, want in (("<|endoftext|> $A", ([1], [])), ("$A <|endoftext|>", ([], [1])),
                         ("<|endoftext|> $A <|endoftext|>", ([1], [1]))):  # fmt: skip
        tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<|endoftext|>", 1)])
        assert _added_around(tok) == want
