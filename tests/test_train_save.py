"""Saving in the Hugging Face format: what lmatlas writes, transformers loads with the same
outputs, and lmatlas loads back exactly; models built from scratch included."""

from __future__ import annotations

import json
import math

import pytest
import torch

import lmatlas
from lmatlas.catalog import architecture
from lmatlas.model import LmatlasModel
from lmatlas.presets import preset_for
from lmatlas.save import as_saved, hf_config, save_model

from .reference import randomize, transformers

TINY = dict(num_layers=2, hidden_size=24, num_heads=3, intermediate_size=40, vocab_size=97, max_positions=40,
            hidden_dropout=0.0, attention_dropout=0.0)
# GPT's and BLOOM's MLPs are four times the width (their config.json has no field for it).
GPT = {"intermediate_size": 96}
# OPT-350m: post-norm, words embedded narrower than the model and projected in and out.
OPT_350M = {"norm_position": "post", "final_norm": False, "embedding_size": 16, "embedding_projection": True,
            "output_projection": True, "embedding_projection_bias": False}
FALCON_GROUPED = {"num_heads": 4, "num_kv_heads": 2}
# Falcon-RW: sequential pre-norm layers, a key/value head per head, ALiBi, biases.
FALCON_RW = {"norm_position": "pre", "num_kv_heads": 3, "position_embedding": "alibi", "alibi_before_scale": True,
             "attention_bias": True, "mlp_bias": True}
ALBERT_GROUPS = {"embedding_size": 16, "num_layers": 4, "num_layer_groups": 2, "inner_group_size": 2}
# The released mBART, Marian and Pegasus checkpoints scale their embeddings by sqrt(d_model).
SEQ2SEQ = {"pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2,
           "embedding_scale": math.sqrt(TINY["hidden_size"])}
# T5 v1.1 (and Flan-T5): gated GELU, an untied head fed the unscaled hidden state.
T5_V1_1 = {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0, "gated_mlp": True,
           "activation": "gelu_new", "tie_word_embeddings": False, "lm_head_scale": 1.0}
# Qwen2: Llama's shape with biases on q/k/v only; small Qwen2 models tie their LM head.
QWEN2 = {"model_type": "qwen2", "qkv_bias": True, "num_heads": 4, "num_kv_heads": 2}
QWEN2_TIED = {**QWEN2, "tie_word_embeddings": True, "num_kv_heads": 1, "pad_token_id": 0}
# Separate source and target tables (of one size: see the refusal test).
MARIAN_TWO_VOCABULARIES = {**SEQ2SEQ, "shared_embeddings": False}

CASES = [
    ("gpt2", "causal-lm", {}),
    ("gpt2", "base", {}),
    ("bert-base", "masked-lm", {}),
    ("bert-base", "sequence-classification", {"id2label": {0: "neg", 1: "neutral", 2: "pos"}}),
    ("bert-base", "token-classification", {"id2label": {0: "O", 1: "B-PER", 2: "I-PER"}}),
    ("bert-base", "question-answering", {}),
    ("roberta-base", "masked-lm", {"pad_token_id": 1}),
    ("roberta-base", "sequence-classification", {"pad_token_id": 1}),
    ("distilbert-base", "masked-lm", {}),
    ("distilbert-base", "sequence-classification", {}),
    ("electra-base", "replaced-token-detection", {"embedding_size": 16}),
    ("electra-base", "masked-lm", {"embedding_size": 16}),
    ("ernie-3.0-base", "masked-lm", {}),
    ("bigbird-roberta-base", "question-answering", {}),
    ("bigbird-roberta-base", "masked-lm", {"num_random_blocks": 1, "block_size": 4}),
    ("bigbird-roberta-base", "sequence-classification", {"qkv_bias": False}),
    ("ernie-3.0-base", "sequence-classification", {"task_type_vocab_size": 0}),
    ("llama-7b", "causal-lm", {"num_kv_heads": 1, "max_positions": 64}),
    # Decoder classifiers read each row at its last token that is not the pad token.
    ("gpt2", "sequence-classification", {"pad_token_id": 0, "id2label": {0: "neg", 1: "neutral", 2: "pos"}}),
    ("llama-7b", "sequence-classification", {"num_kv_heads": 1, "pad_token_id": 0}),
    ("opt-125m", "sequence-classification", {**OPT_350M, "pad_token_id": 1}),
    ("llama-7b", "causal-lm", QWEN2),
    ("llama-7b", "causal-lm", QWEN2_TIED),
    ("llama-7b", "sequence-classification", QWEN2_TIED),
    ("t5-small", "seq2seq-lm", {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}),
    ("t5-small", "seq2seq-lm", T5_V1_1),
    ("switch-base-8", "seq2seq-lm", {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
                                     "num_experts": 3, "expert_capacity": 5}),
    ("bart-base", "seq2seq-lm", {"pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2}),
    ("gpt", "causal-lm", GPT),
    ("ctrl", "causal-lm", {}),
    ("gpt-neo-125m", "causal-lm", {"num_layers": 3, "local_attention_window": 4}),
    ("opt-125m", "causal-lm", {}),
    ("opt-125m", "causal-lm", OPT_350M),
    ("bloom-560m", "causal-lm", GPT),
    ("falcon-7b", "causal-lm", {}),
    ("falcon-40b", "causal-lm", FALCON_GROUPED),
    ("falcon-40b", "causal-lm", {**FALCON_GROUPED, "parallel_norms": 1}),
    ("falcon-7b", "causal-lm", FALCON_RW),
    ("albert-base", "masked-lm", {"embedding_size": 16}),
    ("albert-base", "sequence-classification", ALBERT_GROUPS),
    ("xlm-roberta-base", "masked-lm", {"pad_token_id": 1}),
    ("mbart-large", "seq2seq-lm", SEQ2SEQ),
    ("marian-opus-mt", "seq2seq-lm", SEQ2SEQ),
    ("marian-opus-mt", "seq2seq-lm", MARIAN_TWO_VOCABULARIES),
    ("pegasus-large", "seq2seq-lm", SEQ2SEQ),
    ("bigbird-pegasus-large", "seq2seq-lm", {**SEQ2SEQ, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}),
]

AUTO = {
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "replaced-token-detection": "AutoModelForPreTraining",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "base": "AutoModel",
}


def _model(name: str, head: str, extra: dict) -> LmatlasModel:
    cfg = architecture(name, **{**TINY, **extra})
    if head == "seq2seq-lm":
        assert cfg.is_encoder_decoder
        cfg = cfg.replace(decoder_layers=3)  # a deeper decoder than encoder
    if cfg.type_vocab_size:
        cfg = cfg.replace(type_vocab_size=2)
    if cfg.positions_from_padding:
        cfg = cfg.replace(max_positions=cfg.max_positions + cfg.pad_token_id + 1)
    model = LmatlasModel(as_saved(cfg, head), head)
    randomize(model, seed=3)
    return model.eval()


def _outputs(out, head: str) -> list[torch.Tensor]:
    if head == "question-answering":
        return [out.start_logits, out.end_logits]
    if head == "base":
        return [out.last_hidden_state]
    return [out.logits]


@pytest.mark.parametrize("name,head,extra", CASES, ids=[f"{n}-{h}" for n, h, _ in CASES])
def test_saved_model_loads_in_transformers_and_lmatlas(tmp_path, name, head, extra):
    tf = transformers()
    model = _model(name, head, extra)
    save_model(model, tmp_path)
    ids = torch.randint(4, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    if head == "sequence-classification" and model.is_decoder:
        ids[1, 6:] = model.config.pad_token_id  # what marks the row's end for the classifier
    kwargs = {"attention_mask": mask}
    if head == "seq2seq-lm":
        kwargs["decoder_input_ids"] = torch.randint(4, 97, (2, 5), generator=torch.Generator().manual_seed(1))
    ref, info = getattr(tf, AUTO[head]).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ref.eval()
    with torch.no_grad():
        ours = _outputs(model(ids, **kwargs), head)
        theirs = _outputs(ref(ids, **kwargs), head)
        back = _outputs(lmatlas.load(tmp_path, head=head)(ids, **kwargs), head)
    keep = mask.bool()
    for a, b, c in zip(ours, theirs, back):
        assert torch.equal(a, c)  # lmatlas reads back exactly what it wrote
        if a.shape[:2] == keep.shape and head != "seq2seq-lm":  # padding positions are not compared
            a, b = a[keep], b[keep]
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"][0].endswith(
        {"causal-lm": "LMHeadModel" if name in ("gpt2", "gpt", "ctrl") else "ForCausalLM"}.get(
            head, config["architectures"][0][-10:])
    )
    if "id2label" in extra:
        assert ref.config.id2label == extra["id2label"]


INVERSES = [
    ("gpt2", {}), ("bert-base", {}), ("roberta-base", {}), ("distilbert-base", {}), ("electra-base", {}),
    ("llama-7b", {}), ("t5-small", {}), ("t5-small", T5_V1_1), ("bart-base", {}), ("gpt", GPT), ("ctrl", {}),
    ("gpt-neo-125m", {}), ("llama-7b", QWEN2), ("llama-7b", QWEN2_TIED),
    ("opt-125m", {}), ("opt-125m", OPT_350M), ("bloom-560m", GPT), ("falcon-7b", {}), ("falcon-40b", FALCON_GROUPED),
    ("falcon-7b", FALCON_RW), ("albert-base", ALBERT_GROUPS), ("xlm-roberta-base", {}), ("mbart-large", SEQ2SEQ),
    ("marian-opus-mt", {}), ("marian-opus-mt", MARIAN_TWO_VOCABULARIES), ("pegasus-large", {}),
]


@pytest.mark.parametrize("name,extra", INVERSES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INVERSES)])
def test_to_hf_inverts_the_preset_config(name, extra):
    cfg = architecture(name, **{**TINY, **extra})
    head = "causal-lm" if cfg.causal else "masked-lm"
    if cfg.is_encoder_decoder:
        cfg, head = cfg.replace(decoder_layers=3), "seq2seq-lm"
    cfg = as_saved(cfg, head)
    preset = preset_for(cfg.model_type)
    again = preset.config(hf_config(cfg, head), head)
    skip = {"hf_config", "architectures", "generation"}
    for field in cfg.__dataclass_fields__:
        if field not in skip:
            assert getattr(again, field) == getattr(cfg, field), field


def test_a_family_that_cannot_express_a_switch_refuses_to_save():
    cfg = architecture("gpt2", **TINY).replace(norm="rmsnorm")
    with pytest.raises(lmatlas.LmatlasError, match="rmsnorm"):
        hf_config(cfg, "causal-lm")


@pytest.mark.parametrize("name,extra,switch", [
    ("gpt", {}, "intermediate_size=40"),
    ("ctrl", {"activation": "gelu"}, "activation"),
    ("gpt-neo-125m", {"qkv_bias": True}, "qkv_bias"),
    ("llama-7b", {**QWEN2, "qkv_bias": False}, "qkv_bias"),
    ("llama-7b", {**QWEN2, "attention_bias": True}, "attention_bias"),
    ("opt-125m", {"norm": "rmsnorm"}, "rmsnorm"),
    ("opt-125m", {"embedding_size": 16}, "embedding_projection"),
    ("bloom-560m", {**GPT, "num_kv_heads": 1}, "num_kv_heads"),
    ("falcon-7b", {**FALCON_GROUPED, "norm_position": "pre"}, "2 key/value heads of 4"),
    ("falcon-7b", {"rotary_interleaved": True}, "rotary_interleaved"),
    ("albert-base", {"causal": True}, "causal"),
    ("xlm-roberta-base", {"positions_from_padding": False}, "positions_from_padding"),
    ("bart-base", {"shared_embeddings": False, "decoder_vocab_size": 101}, "shared_embeddings"),
    ("mbart-large", {"embedding_scale": 2.0}, "embedding_scale"),
    ("pegasus-large", {"sinusoidal_layout": "interleaved"}, "sinusoidal_layout"),
    ("marian-opus-mt", {"norm_eps": 1e-6}, "norm_eps"),
    # transformers builds a Marian decoder's table at the source vocabulary's size.
    ("marian-opus-mt", {"shared_embeddings": False, "decoder_vocab_size": 101}, "target vocabulary"),
])
def test_each_family_refuses_what_its_config_cannot_express(name, extra, switch):
    cfg = architecture(name, **{**TINY, **extra})
    head = "seq2seq-lm" if cfg.is_encoder_decoder else "causal-lm" if cfg.causal else "masked-lm"
    with pytest.raises(lmatlas.LmatlasError, match=switch):
        hf_config(cfg, head)


def test_architecture_without_a_checkpoint_format_is_a_clear_error():
    cfg = architecture("gpt3-175b", **TINY)
    with pytest.raises(lmatlas.LmatlasError, match="gpt3"):
        hf_config(cfg, "causal-lm")
    with pytest.raises(lmatlas.LmatlasError, match="'gpt3' has no Hugging Face format"):
        as_saved(cfg, "causal-lm")  # as training from scratch builds its model
