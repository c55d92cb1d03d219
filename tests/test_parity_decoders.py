"""Decoder presets against transformers, on checkpoints it writes with random weights.

Unusual shapes on purpose: an odd vocabulary, hidden 48 with 3, 4 or 6 heads, grouped and
multi-query key/value heads, a head_dim that does not divide the width, narrow OPT word
embeddings, GPT-Neo's local window shorter than the batch, ALiBi with a head count that is no
power of two; right-padded batches, untied heads; every layout named in the issue.
"""

from __future__ import annotations

import json

import pytest
import torch

import lmatlas

from .reference import randomize, saved_references, transformers

TOL = 1e-4
VOCAB = 1013
EOS, BOS, PAD = 2, 1, 0

_tokens = dict(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)

# name -> (config class, config kwargs, causal-lm class, base class)
VARIANTS: dict[str, tuple[str, dict, str, str]] = {
    "gpt": ("OpenAIGPTConfig", dict(vocab_size=VOCAB, n_positions=40, n_embd=48, n_layer=3, n_head=3),
            "OpenAIGPTLMHeadModel", "OpenAIGPTModel"),
    "gpt2": ("GPT2Config", dict(vocab_size=VOCAB, n_positions=40, n_embd=48, n_layer=3, n_head=4, n_inner=70,
                                **_tokens), "GPT2LMHeadModel", "GPT2Model"),
    # transformers' SDPA path drops scale_attn_by_inverse_layer_idx; its eager path keeps it.
    "gpt2-inverse-layer-scale-untied": (
        "GPT2Config", dict(vocab_size=VOCAB, n_positions=40, n_embd=48, n_layer=3, n_head=3,
                           scale_attn_by_inverse_layer_idx=True, tie_word_embeddings=False,
                           attn_implementation="eager", **_tokens),
        "GPT2LMHeadModel", "GPT2Model"),
    "ctrl": ("CTRLConfig", dict(vocab_size=VOCAB, n_positions=40, n_embd=48, dff=70, n_layer=3, n_head=4,
                                layer_norm_epsilon=1e-5, **_tokens), "CTRLLMHeadModel", "CTRLModel"),
    "gpt_neo": ("GPTNeoConfig", dict(vocab_size=VOCAB, max_position_embeddings=40, hidden_size=48, num_layers=4,
                                     attention_types=[[["global", "local"], 2]], num_heads=3, window_size=5,
                                     intermediate_size=70, **_tokens), "GPTNeoForCausalLM", "GPTNeoModel"),
    "opt": ("OPTConfig", dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, ffn_dim=70,
                              num_attention_heads=4, max_position_embeddings=40, word_embed_proj_dim=48, **_tokens),
            "OPTForCausalLM", "OPTModel"),
    "opt-350m-post-norm-projected": (
        "OPTConfig", dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, ffn_dim=70, num_attention_heads=3,
                          max_position_embeddings=40, word_embed_proj_dim=24, do_layer_norm_before=False,
                          **_tokens), "OPTForCausalLM", "OPTModel"),
    # (layer_norm_elementwise_affine=False is supported too, but transformers cannot build it.)
    "opt-no-bias": (
        "OPTConfig", dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, ffn_dim=70, num_attention_heads=4,
                          max_position_embeddings=40, word_embed_proj_dim=48, enable_bias=False, **_tokens),
        "OPTForCausalLM", "OPTModel"),
    "bloom": ("BloomConfig", dict(vocab_size=VOCAB, hidden_size=48, n_layer=3, n_head=6, **_tokens),
              "BloomForCausalLM", "BloomModel"),
    "bloom-residual-post-norm": (
        "BloomConfig", dict(vocab_size=VOCAB, hidden_size=48, n_layer=2, n_head=4,
                            apply_residual_connection_post_layernorm=True, **_tokens),
        "BloomForCausalLM", "BloomModel"),
    "falcon-7b-multi-query": (
        "FalconConfig", dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                             multi_query=True, parallel_attn=True, new_decoder_architecture=False, bias=False,
                             max_position_embeddings=40, **_tokens), "FalconForCausalLM", "FalconModel"),
    "falcon-40b-new-architecture": (
        "FalconConfig", dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                             num_kv_heads=2, new_decoder_architecture=True, bias=False, ffn_hidden_size=70,
                             max_position_embeddings=40, **_tokens), "FalconForCausalLM", "FalconModel"),
    "falcon-new-architecture-one-norm": (
        "FalconConfig", dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                             num_kv_heads=3, new_decoder_architecture=True, num_ln_in_parallel_attn=1, bias=True,
                             max_position_embeddings=40, tie_word_embeddings=False, **_tokens),
        "FalconForCausalLM", "FalconModel"),
    "falcon-rw-alibi-sequential": (
        "FalconConfig", dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                             alibi=True, multi_query=False, parallel_attn=False, bias=True,
                             max_position_embeddings=40, **_tokens), "FalconForCausalLM", "FalconModel"),
    "falcon-full-heads-parallel": (
        "FalconConfig", dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                             multi_query=False, parallel_attn=True, bias=True, activation="gelu",
                             max_position_embeddings=40, rope_theta=500.0, **_tokens),
        "FalconForCausalLM", "FalconModel"),
    "llama-gqa": ("LlamaConfig", dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=70, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=40,
                                      **_tokens), "LlamaForCausalLM", "LlamaModel"),
    "llama-head-dim-tied-bias-llama3-rope": (
        "LlamaConfig", dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=70, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True,
                            attention_bias=True, mlp_bias=True, rope_theta=5000.0, max_position_embeddings=40,
                            rope_scaling=dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0,
                                              high_freq_factor=4.0, original_max_position_embeddings=16),
                            **_tokens), "LlamaForCausalLM", "LlamaModel"),
    # A window in config.json that transformers ignores, as use_sliding_window is false.
    "qwen2-gqa-untied-window-off": (
        "Qwen2Config", dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=70, num_hidden_layers=3,
                            num_attention_heads=6, num_key_value_heads=2, rope_theta=1e6, max_position_embeddings=40,
                            use_sliding_window=False, sliding_window=4, max_window_layers=1,
                            tie_word_embeddings=False, **_tokens), "Qwen2ForCausalLM", "Qwen2Model"),
    "qwen2-head-dim-tied-multi-query-linear-rope": (
        "Qwen2Config", dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=70, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True,
                            max_position_embeddings=40, rope_scaling=dict(type="linear", factor=2.5),
                            **_tokens), "Qwen2ForCausalLM", "Qwen2Model"),
}

# transformers' generate() ignores the attention mask (CTRL) or the positions (GPT) of these
# models when prompts are left-padded; lmatlas does not, and matches their unpadded output.
HF_BATCHING_IGNORES_PADDING = {"gpt", "ctrl"}


# Sequence classifiers get three labels with odd names, and a pad token (GPT has none of its own,
# and without one transformers classifies only a batch of one).
CLASSIFIER = dict(id2label={0: "negative :(", 1: "positive :)", 2: "mixed/other"}, pad_token_id=PAD)


def reference_class(variant: str, head: str) -> str:
    _, _, lm_cls, base_cls = VARIANTS[variant]
    if head == "causal-lm":
        return lm_cls
    if head == "sequence-classification":
        return base_cls.removesuffix("Model") + "ForSequenceClassification"
    return base_cls


def build_reference(variant: str, head: str = "causal-lm", seed: int | None = None, **config):
    """A transformers model of ``variant`` with ``head`` and random weights; ``config`` overrides
    the variant's config fields."""
    tf = transformers()
    config_cls, kw, _, _ = VARIANTS[variant]
    defaults = CLASSIFIER if head == "sequence-classification" else {}
    config = getattr(tf, config_cls)(**{**kw, **defaults, **config})
    torch.manual_seed(0)
    model = getattr(tf, reference_class(variant, head))(config).eval()
    randomize(model, seed=seed if seed is not None else sum(map(ord, variant + head)) % 1000)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


_saved = saved_references(build_reference)


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("decoders"))

    def get(variant: str, head: str = "causal-lm", safe: bool = True):
        ref, folder = _saved(variant, head, safe, root)
        return ref, lmatlas.load(folder)

    return get


def right_padded_batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 13), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate((13, 9, 4)):
        ids[row, length:] = PAD
        mask[row, length:] = 0
    return ids, mask


def left_padded_batch(seed: int = 2):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate((9, 6, 3)):
        ids[row, : 9 - length] = PAD
        mask[row, : 9 - length] = 0
    return ids, mask


CASES = [(v, h) for v in VARIANTS for h in ("causal-lm", "base")]


@pytest.mark.parametrize("variant,head", CASES)
def test_parity_right_padded(variant, head, saved):
    ref, ours = saved(variant, head)
    assert ours.head_name == head
    ids, mask = right_padded_batch()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask)
        got = ours(input_ids=ids, attention_mask=mask)
    field = "logits" if head == "causal-lm" else "last_hidden_state"
    e, g = getattr(expected, field), got[field]
    assert g.shape == e.shape
    # Padding positions are not compared: what a query that may see nothing gets is undefined
    # (transformers' own eager and SDPA paths disagree there, e.g. in GPT-Neo's local layers).
    diff = (g - e)[mask.bool()].abs().max().item()
    assert diff <= TOL, f"{variant} {head}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("variant", ["gpt2", "opt-350m-post-norm-projected", "falcon-40b-new-architecture"])
def test_parity_pytorch_bin(variant, saved):
    ref, ours = saved(variant, "causal-lm", safe=False)
    ids, mask = right_padded_batch()
    with torch.no_grad():
        diff = (ours(input_ids=ids, attention_mask=mask).logits - ref(input_ids=ids, attention_mask=mask).logits)
    assert diff.abs().max().item() <= TOL


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_steps_equal_full_forward(variant, saved):
    """Prefill a left-padded batch, then feed tokens one (and three) at a time through the
    cache: each step's logits equal those of one forward pass over the whole sequence."""
    _, ours = saved(variant)
    ids, mask = left_padded_batch()
    extra = torch.randint(3, VOCAB, (3, 5), generator=torch.Generator().manual_seed(3))
    full_ids = torch.cat([ids, extra], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(extra)], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = ours(full_ids, attention_mask=full_mask, position_ids=positions).logits
        cache = ours.new_cache(3, full_ids.shape[1])
        n = ids.shape[1]
        steps = [ours(ids, attention_mask=mask, position_ids=positions[:, :n], cache=cache).logits]
        for start, stop in ((n, n + 1), (n + 1, n + 4), (n + 4, n + 5)):
            steps.append(
                ours(full_ids[:, start:stop], attention_mask=full_mask[:, :stop],
                     position_ids=positions[:, start:stop], cache=cache).logits
            )
    cached = torch.cat(steps, dim=1)
    real = full_mask.bool()
    diff = (cached - full)[real].abs().max().item()
    assert diff <= TOL, f"{variant}: cached vs full max abs diff {diff:.2e}"


def test_tied_and_untied_heads(saved):
    _, tied = saved("gpt2")
    assert tied.head.decoder.weight is tied.backbone.embeddings.tokens.weight
    _, untied = saved("gpt2-inverse-layer-scale-untied")
    assert untied.head.decoder.weight is not untied.backbone.embeddings.tokens.weight
    _, llama = saved("llama-gqa")
    assert llama.head.decoder.weight is not llama.backbone.embeddings.tokens.weight
    _, qwen2 = saved("qwen2-head-dim-tied-multi-query-linear-rope")
    assert qwen2.head.decoder.weight is qwen2.backbone.embeddings.tokens.weight
    _, qwen2 = saved("qwen2-gqa-untied-window-off")
    assert qwen2.head.decoder.weight is not qwen2.backbone.embeddings.tokens.weight
    attn = qwen2.backbone.layers[0].attn
    assert attn.qkv.bias is not None and attn.out.bias is None  # biases on q/k/v only


def test_multi_query_cache_stores_one_kv_head(saved):
    _, ours = saved("falcon-7b-multi-query")
    cache = ours.new_cache(2, 10)
    assert cache.data.shape[3] == 1  # one key/value head for four query heads
    _, gqa = saved("llama-gqa")
    assert gqa.new_cache(2, 10).data.shape[3] == 2


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "falcon"])
def test_rope_settings_in_either_config_layout(model_type):
    """transformers 5 writes the rotary base and scaling inside one rope_parameters dict."""
    from lmatlas.presets import preset_for

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    shape = {"model_type": model_type, "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2,
             "vocab_size": 100, "new_decoder_architecture": True, "num_kv_heads": 2}
    v4 = {**shape, "rope_theta": 5e5, "rope_scaling": scaling}
    v5 = {**shape, "rope_parameters": {**scaling, "rope_theta": 5e5}}
    preset = preset_for(model_type)
    assert preset.config(v5, "causal-lm").replace(hf_config={}) == preset.config(v4, "causal-lm").replace(hf_config={})
    plain = preset.config({**shape, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}, "causal-lm")
    assert plain.rope_scaling is None and plain.rotary_base == 1e4


QWEN2 = "qwen2-gqa-untied-window-off"


@pytest.mark.parametrize("fields,layers", [
    ({"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}, [1, 2]),
    ({"layer_types": ["full_attention", "sliding_attention", "full_attention"]}, [1]),
])
def test_qwen2_sliding_window_is_refused(fields, layers, tmp_path):
    """transformers would attend within a window on these layers; lmatlas refuses, naming them."""
    build_reference(QWEN2).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("layer_types")  # as released checkpoints have it: the window then decides the layers
    config |= fields
    (tmp_path / "config.json").write_text(json.dumps(config))
    types = transformers().Qwen2Config.from_dict(config).layer_types
    assert [i for i, kind in enumerate(types) if kind == "sliding_attention"] == layers
    with pytest.raises(lmatlas.LmatlasError, match=rf"config.json: .*sliding.*layers \[{str(layers)[1:-1]}\]"):
        lmatlas.load(tmp_path)


def test_qwen2_window_on_with_no_layer_past_max_window_layers(tmp_path):
    """use_sliding_window with max_window_layers >= the depth slides no layer: plain attention."""
    ref = build_reference(QWEN2, use_sliding_window=True, sliding_window=4, max_window_layers=3)
    ref.save_pretrained(tmp_path)
    ids, mask = right_padded_batch()
    with torch.no_grad():
        got = lmatlas.load(tmp_path)(ids, attention_mask=mask).logits
        expected = ref(input_ids=ids, attention_mask=mask).logits
    assert (got - expected)[mask.bool()].abs().max().item() <= TOL


def test_qwen2_config_defaults_are_qwen2s():
    """Fields a config.json leaves out take Qwen2Config's defaults, not Llama's; the biases are
    fixed by the architecture, whatever attention_bias says."""
    from lmatlas.presets import preset_for

    cfg = preset_for("qwen2").config({"model_type": "qwen2", "attention_bias": True, "mlp_bias": True}, "causal-lm")
    hf = transformers().Qwen2Config()
    assert (cfg.vocab_size, cfg.intermediate_size, cfg.max_positions) == (
        hf.vocab_size, hf.intermediate_size, hf.max_position_embeddings)
    assert (cfg.num_kv_heads, cfg.tie_word_embeddings, cfg.rotary_base) == (
        hf.num_key_value_heads, hf.tie_word_embeddings, hf.rope_theta)
    assert (cfg.qkv_bias, cfg.attention_bias, cfg.mlp_bias) == (True, False, False)
