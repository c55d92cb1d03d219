"""`lmatlas estimate`: parameters (exact for a folder), FLOPs, Chinchilla tokens, memory, KV cache,
and the decoding bound, with user mistakes as one clear sentence."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmatlas import presets
from lmatlas.estimate import bandwidth as bandwidth_mod
from lmatlas.catalog import architecture_preset
from lmatlas.cli import main
from lmatlas.errors import LmatlasError
from lmatlas.estimate import (
    DTYPE_BYTES,
    chinchilla_tokens,
    count_params,
    estimate,
    folder_params,
    folder_shape,
    format_estimate,
    parse_bandwidth,
)

from . import reference

FAKE_BANDWIDTH = 20e9


@pytest.fixture(autouse=True)
def no_timing(monkeypatch):
    """No test times this machine: the command's bandwidth 'measurement' is a fixed number here."""
    monkeypatch.setattr(bandwidth_mod, "measure_bandwidth", lambda: FAKE_BANDWIDTH)


# --------------------------------------------------------------------------------------------
# Chinchilla
# --------------------------------------------------------------------------------------------

# Hoffmann et al. 2022, Table 3: compute-optimal training tokens for a given model size.
CHINCHILLA_TABLE = {400e6: 8.0e9, 1e9: 20.2e9, 10e9: 205.1e9, 67e9: 1.5e12, 175e9: 3.7e12, 280e9: 5.9e12}


@pytest.mark.parametrize("params,tokens", sorted(CHINCHILLA_TABLE.items()))
def test_chinchilla_tokens_reproduce_the_table(params, tokens):
    assert abs(chinchilla_tokens(params) / tokens - 1) < 0.10


def test_chinchilla_is_about_twenty_tokens_a_parameter():
    assert 19.5 < chinchilla_tokens(70e9) / 70e9 < 22


# --------------------------------------------------------------------------------------------
# KV cache, FLOPs, memory
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt3-175b", "falcon-40b", "llama-7b", "palm-540b", "t5-small", "bart-large"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "int4"])
def test_kv_cache_is_two_layers_kv_heads_head_dim_bytes(name, dtype):
    a = architecture_preset(name)
    c = a.config
    layers = a.extra["num_decoder_layers"] if a.skeleton == "encoder-decoder" else c.num_layers
    expected = 2 * layers * c.num_kv_heads * c.head_dim * DTYPE_BYTES[dtype]
    e = estimate(name, dtype=dtype, bandwidth=10e9)
    assert e.kv_cache_bytes_per_token == expected
    if name == "falcon-40b":  # grouped heads: 8 key/value heads of 64, not 128
        assert expected == 2 * 60 * 8 * 64 * DTYPE_BYTES[dtype]


def test_gpt3_numbers():
    e = estimate("GPT-3", dtype="bf16", seq=2048, bandwidth=100e9, bandwidth_source="--bandwidth")
    n = e.params
    assert e.preset == "gpt3-175b" and e.published_params == 175e9
    # Forward: about 2 FLOPs a parameter, plus attention 4 * 12288 * 2048 * 96.
    assert e.flops_per_token_attention == 4 * 12288 * 2048 * 96
    assert abs(e.flops_per_token_matmul / (2 * n) - 1) < 0.01
    assert e.train_tokens == 300e9 and e.train_tokens_source == "catalogue"
    assert e.train_flops == 6 * n * 300e9
    assert 3.1e23 < e.train_flops < 3.2e23  # the paper's 3.14e23
    assert e.weights_bytes["bfloat16"] == 2 * n and e.weights_bytes["int4"] == n / 2
    assert e.inference_breakdown["kv_cache"] == e.kv_cache_bytes_per_token * 2048
    assert e.training_breakdown["optimizer"] == 12 * n
    per_step = e.weights_bytes["bfloat16"] + e.kv_cache_bytes_per_token * 2048
    assert e.decode_tokens_per_s_bound == pytest.approx(100e9 / per_step)
    assert e.bandwidth_source == "--bandwidth"


def test_batch_and_seq_scale_the_working_set():
    one = estimate("llama-7b", batch=1, seq=512, bandwidth=FAKE_BANDWIDTH)
    four = estimate("llama-7b", batch=4, seq=1024, bandwidth=FAKE_BANDWIDTH)
    assert four.inference_breakdown["kv_cache"] == 8 * one.inference_breakdown["kv_cache"]
    assert four.decode_tokens_per_s_bound > one.decode_tokens_per_s_bound  # batching amortises the weights
    assert one.bandwidth_bytes_per_s == FAKE_BANDWIDTH and one.bandwidth_source == "given"


def test_local_attention_layers_attend_their_window():
    e = estimate("gpt-neo-125m", seq=2048)
    c = architecture_preset("gpt-neo-125m").config
    assert e.flops_per_token_attention == 4 * c.hidden_size * (6 * 2048 + 6 * 256)


def test_names_resolve_to_the_catalogue_or_a_preset():
    assert estimate("gpt2").params == 124_439_808  # the preset: the smallest GPT-2
    assert estimate("GPT-2").preset == "gpt2-xl"  # the catalogue's GPT-2: its headline size
    assert estimate("gpt 3").preset == "gpt3-175b"  # loosely, the catalogue
    assert estimate("Alpaca").preset == "llama-7b"


def test_encoder_has_no_cache_and_no_decode_bound():
    e = estimate("bert-base")
    assert e.kv_cache_bytes_per_token is None and e.decode_tokens_per_s_bound is None
    assert e.seq == 512 and e.params == 109_482_240


def test_catalogue_entry_without_a_shape():
    e = estimate("GLaM")
    assert e.params == 1.2e12 and e.flops_per_token == 2 * 1.2e12 and e.kv_cache_bytes_per_token is None
    assert any("mixture-of-experts" in n for n in e.notes)


def test_quantised_dtypes_have_no_training_figure():
    e = estimate("llama-7b", dtype="int4")
    assert e.training_bytes is None and e.weights_bytes["int4"] == e.params / 2


def test_tokens_option_and_compute_optimal_default():
    assert estimate("llama-7b", tokens="1T").train_flops == 6 * 6_738_415_616 * 1e12
    e = estimate("llama-7b")  # a preset that is not the catalogue's headline size
    assert e.train_tokens_source == "compute-optimal" and e.train_tokens == chinchilla_tokens(e.params)


def test_bandwidth_units():
    assert parse_bandwidth("25") == 25e9
    assert parse_bandwidth("1.5TB/s") == 1.5e12
    assert parse_bandwidth("800 MB/s") == 800e6
    assert parse_bandwidth("10GiB/s") == 10 * 2**30


def test_measured_bandwidth_is_a_rate(monkeypatch):
    monkeypatch.undo()  # the real measurement, once, without judging its speed
    bw = bandwidth_mod.measure_bandwidth()
    assert math.isfinite(bw) and bw > 0


# --------------------------------------------------------------------------------------------
# A checkpoint folder: parameters counted exactly
# --------------------------------------------------------------------------------------------


def _save(model, folder, **kw):
    model.save_pretrained(folder, **kw)
    return model.num_parameters()


def test_folder_bert_equals_transformers(tmp_path):
    tf = reference.transformers()
    cfg = tf.BertConfig(vocab_size=1013, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=100, max_position_embeddings=64)
    expected = _save(tf.BertForMaskedLM(cfg), tmp_path)  # decoder weight and bias are tied
    assert folder_params(tmp_path) == expected
    e = estimate(str(tmp_path), bandwidth=10e9)
    assert e.params == expected and e.params_exact and e.source == "folder"


def test_folder_bert_pretraining_and_base(tmp_path):
    tf = reference.transformers()
    cfg = tf.BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    for i, cls in enumerate([tf.BertForPreTraining, tf.BertModel, tf.BertForSequenceClassification]):
        folder = tmp_path / str(i)
        expected = _save(cls(cfg), folder)
        assert folder_params(folder) == expected, cls.__name__


def test_folder_gpt2_equals_transformers(tmp_path):
    tf = reference.transformers()
    cfg = tf.GPT2Config(vocab_size=999, n_embd=40, n_layer=3, n_head=5, n_positions=77)
    model = tf.GPT2LMHeadModel(cfg)
    expected = _save(model, tmp_path)  # lm_head is tied and not saved
    assert folder_params(tmp_path) == expected
    # The shape GPT-2's preset reads from config.json counts the same, analytically.
    shape, notes = folder_shape(tmp_path)
    assert count_params(shape).total == expected and notes == []
    e = estimate(str(tmp_path), bandwidth=10e9)
    assert e.kv_cache_bytes_per_token == 2 * 3 * 5 * 8 * 2


def test_folder_with_old_style_extras(tmp_path):
    """Older GPT-2 files keep the causal-mask buffers and the tied head: neither is a parameter."""
    tf = reference.transformers()
    from safetensors.torch import save_file

    cfg = tf.GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=16)
    model = tf.GPT2LMHeadModel(cfg)
    expected = _save(model, tmp_path)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    for i in range(2):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 16, 16))
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, str(tmp_path / "model.safetensors"))
    assert folder_params(tmp_path) == expected


def test_folder_untied_llama_and_sharded(tmp_path):
    tf = reference.transformers()
    cfg = tf.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = tf.LlamaForCausalLM(cfg)
    expected = _save(model, tmp_path, max_shard_size="50KB")  # several shards and an index
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert folder_params(tmp_path) == expected
    assert estimate(str(tmp_path), bandwidth=10e9).kv_cache_bytes_per_token == 2 * 2 * 2 * 16 * 2


def test_folder_t5_bin_and_bart(tmp_path):
    """Encoder-decoders share one token table three ways; a .bin file may keep every alias."""
    tf = reference.transformers()
    t5 = tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=200, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                   num_decoder_layers=3, num_heads=4))
    expected = t5.num_parameters()
    torch.save(t5.state_dict(), tmp_path / "pytorch_model.bin")  # all aliases, sharing storage
    t5.config.save_pretrained(tmp_path)
    assert folder_params(tmp_path) == expected
    bart_dir = tmp_path / "bart"
    bart = tf.BartForConditionalGeneration(tf.BartConfig(vocab_size=210, d_model=32, encoder_layers=2, decoder_layers=2,
                                                         encoder_attention_heads=4, decoder_attention_heads=4,
                                                         encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=40))
    expected = _save(bart, bart_dir)  # final_logits_bias is a buffer, not a parameter
    assert folder_params(bart_dir) == expected


def test_folder_t5_head_as_transformers_5_writes_it(tmp_path):
    """transformers 5 writes T5 v1.1's config.json as tie_word_embeddings true with
    scale_decoder_outputs false, and stores the untied lm_head: it counts."""
    from safetensors.torch import save_file

    tf = reference.transformers()
    kw = dict(vocab_size=200, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4,
              feed_forward_proj="gated-gelu")
    t5 = tf.T5ForConditionalGeneration(tf.T5Config(**kw))
    expected = t5.num_parameters() + 200 * 32  # the tied model's count, and the head's own table
    state = {k: v.clone() for k, v in t5.state_dict().items() if "embed_tokens" not in k}
    state["lm_head.weight"] = torch.randn(200, 32)
    save_file(state, str(tmp_path / "model.safetensors"))
    config = dict(kw, model_type="t5", is_encoder_decoder=True, tie_word_embeddings=True, scale_decoder_outputs=False)
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert folder_params(tmp_path) == expected
    # T5's preset reads the shape: three decoding layers of four heads of 8.
    e = estimate(str(tmp_path), bandwidth=10e9)
    assert e.params == expected and e.kv_cache_bytes_per_token == 2 * 3 * 4 * 8 * 2
    assert e.flops_per_token_matmul == estimate(str(tmp_path), bandwidth=10e9).flops_per_token_matmul > 0


def test_folder_shape_is_the_presets_config(tmp_path):
    """A supported family's config.json is read by its preset, exactly as loading reads it."""
    tf = reference.transformers()
    cfg = tf.RobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=48, max_position_embeddings=40, pad_token_id=1)
    expected = _save(tf.RobertaForMaskedLM(cfg), tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    shape, notes = folder_shape(tmp_path)
    assert shape.config == presets.preset_for("roberta").config(hf, "masked-lm") and notes == []
    assert shape.skeleton == "encoder" and shape.source == str(tmp_path / "config.json")
    e = estimate(str(tmp_path))
    assert e.params == expected and e.seq == 40 - 2  # positions counted after padding, from the preset
    assert e.kv_cache_bytes_per_token is None  # decided by the config (not causal), not by a table


def test_folder_albert_shares_its_layers(tmp_path):
    tf = reference.transformers()
    cfg = tf.AlbertConfig(vocab_size=90, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                          num_attention_heads=4, intermediate_size=40, max_position_embeddings=32)
    expected = _save(tf.AlbertModel(cfg), tmp_path)
    shape, _ = folder_shape(tmp_path)
    assert count_params(shape).total == folder_params(tmp_path) == expected
    e = estimate(str(tmp_path))
    assert e.flops_per_token_attention == 4 * 32 * e.seq * 3  # one shared block, applied three times


def test_folder_of_a_family_without_a_preset(tmp_path):
    """Mistral has no lmatlas preset: exact parameters, a shape from config.json's common keys,
    and a note that says so."""
    tf = reference.transformers()
    cfg = tf.MistralConfig(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    expected = _save(tf.MistralForCausalLM(cfg), tmp_path)
    e = estimate(str(tmp_path), dtype="float32", bandwidth=10e9)
    assert e.params == expected and e.params_exact
    assert e.kv_cache_bytes_per_token == 2 * 2 * 2 * 8 * 4  # causal, from its architectures
    assert any("'mistral' has no lmatlas preset" in n for n in e.notes)
    shape, _ = folder_shape(tmp_path)
    assert shape.config.gated_mlp and shape.config.position_embedding == "rotary"
    assert abs(count_params(shape).total / expected - 1) < 0.05  # an approximation (biases, norms)


# --------------------------------------------------------------------------------------------
# Bandwidth is an input
# --------------------------------------------------------------------------------------------


def test_the_library_never_measures(monkeypatch):
    def timed():
        raise AssertionError("estimate() timed the machine")

    monkeypatch.setattr(bandwidth_mod, "measure_bandwidth", timed)
    e = estimate("llama-7b")
    assert e.bandwidth_bytes_per_s is None and e.bandwidth_source is None and e.decode_tokens_per_s_bound is None
    assert "no memory bandwidth given" in format_estimate(e)
    given = estimate("llama-7b", bandwidth=50e9)
    assert given.decode_tokens_per_s_bound == pytest.approx(50e9 / (given.weights_bytes["bfloat16"]
                                                                      + given.kv_cache_bytes_per_token * given.seq))
    with pytest.raises(LmatlasError, match="bandwidth must be a positive number of bytes per second"):
        estimate("llama-7b", bandwidth=-1.0)


def test_the_command_measures_unless_told(capsys):
    assert main(["estimate", "llama-7b", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["bandwidth_bytes_per_s"] == FAKE_BANDWIDTH and d["bandwidth_source"] == "measured"
    assert main(["estimate", "llama-7b", "--json", "--bandwidth", "30GB/s"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["bandwidth_bytes_per_s"] == 30e9 and d["bandwidth_source"] == "--bandwidth"


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_cli_text_has_units(capsys):
    assert main(["estimate", "gpt-3", "--bandwidth", "50"]) == 0
    out = capsys.readouterr().out
    for text in ("174.6B", "GFLOP", "3.14e+23 FLOP", "GiB", "4.5 MiB", "tokens/s", "50 GB/s (--bandwidth)"):
        assert text in out, text


def test_cli_json(capsys):
    assert main(["estimate", "falcon-40b", "--json", "--dtype", "int8", "--batch", "2", "--seq", "1024"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["params"] == 41_303_293_952 and d["dtype"] == "int8" and (d["batch"], d["seq"]) == (2, 1024)
    assert d["kv_cache_bytes_per_token"] == 2 * 60 * 8 * 64
    for key in ("flops_per_token", "train_flops", "chinchilla_tokens", "inference_bytes", "decode_tokens_per_s_bound"):
        assert isinstance(d[key], (int, float)), key
    assert set(d["weights_bytes"]) == set(DTYPE_BYTES) and d["training_bytes"] is None


def test_cli_folder(tmp_path, capsys):
    tf = reference.transformers()
    cfg = tf.BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    expected = _save(tf.BertModel(cfg), tmp_path)
    assert main(["estimate", str(tmp_path), "--json", "--bandwidth", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == expected


@pytest.fixture
def not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text('{"model_type": "bert", "hidden_size": 8, '
                                                        '"num_hidden_layers": 1, "num_attention_heads": 2}')
    (tmp_path / "file.txt").write_text("x")
    return tmp_path


@pytest.mark.parametrize(
    "args,message",
    [
        (["estimate", "gpt-5"], "no model or preset called 'gpt-5'; did you mean"),
        (["estimate", "Chinchila"], "did you mean Chinchilla"),
        (["estimate", "GPT-4"], "GPT-4: the catalogue has no parameter count"),
        (["estimate", "gpt2", "--dtype", "fp8"], "--dtype must be one of float32, bfloat16, float16, int8, int4"),
        (["estimate", "gpt2", "--batch", "0"], "--batch must be a positive whole number, not '0'"),
        (["estimate", "gpt2", "--batch", "two"], "--batch must be a positive whole number"),
        (["estimate", "gpt2", "--seq", "1.5"], "--seq must be a positive whole number"),
        (["estimate", "gpt2", "--tokens", "lots"], "--tokens must be a number such as 350M"),
        (["estimate", "gpt2", "--bandwidth", "fast"], "--bandwidth must be a number of GB/s"),
        (["estimate", "gpt2", "--bandwidth", "0"], "--bandwidth must be positive"),
        (["estimate", "./no/such/model"], "./no/such/model: no such folder"),
        (["estimate", "{tmp}/empty"], "no config.json, so this is not a model folder"),
        (["estimate", "{tmp}/noweights"], "no weights (model.safetensors"),
        (["estimate", "{tmp}/file.txt"], "not a folder"),
    ],
)
def test_cli_user_errors(args, message, not_a_model, capsys):
    args = [a.replace("{tmp}", str(not_a_model)) for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("lmatlas: error: ") and message in err and err.count("\n") == 1, err


def test_bad_weight_file_is_one_sentence(tmp_path):
    tf = reference.transformers()
    tf.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(LmatlasError, match="model.safetensors: not a readable safetensors file"):
        folder_params(tmp_path)


def test_mixture_of_experts_counts_total_and_active():
    """Switch-Base-8: T5-Base with 8 experts in every other layer's MLP; a token uses one expert
    and the router of each, so its active parameters are T5-Base's and the routers'."""
    from lmatlas.catalog import architecture_preset
    from lmatlas.estimate import count_params, estimate

    switch, t5 = count_params(architecture_preset("switch-base-8")), count_params(architecture_preset("t5-base"))
    sparse_layers, experts, width, mlp = 12, 8, 768, 2 * 768 * 3072
    assert switch.total == t5.total + sparse_layers * ((experts - 1) * mlp + width * experts)
    assert switch.active == t5.total + sparse_layers * width * experts
    est = estimate("switch-base-8", tokens="1B")
    assert est.active_params == switch.active
    assert est.train_flops == 6.0 * switch.active * 1e9
    assert estimate("t5-base").active_params is None
