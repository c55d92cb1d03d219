"""Encoder-decoder presets against transformers, on checkpoints it writes with random weights.

Unusual shapes on purpose: encoder and decoder of different depths and head counts (3 and 6
heads on width 48), an odd vocabulary, T5 with few buckets, a short maximum distance and heads
whose d_kv does not divide the width; right-padded source batches longer than T5's maximum
distance; random final_logits_bias; untied heads; Marian with separate source and target tables.
"""

from __future__ import annotations


import pytest
import torch

import lmatlas
from lmatlas.cache import Seq2SeqCache

from .reference import randomize, restore_fixed_positions, saved_references, transformers

TOL = 1e-4
VOCAB = 1013
SOURCE_LENGTH = 17

_bart_shape = dict(
    vocab_size=VOCAB, d_model=48, encoder_layers=2, decoder_layers=3, encoder_attention_heads=3,
    decoder_attention_heads=6, encoder_ffn_dim=70, decoder_ffn_dim=50, max_position_embeddings=40,
)  # fmt: skip
_t5_shape = dict(vocab_size=VOCAB, d_model=48, num_layers=2, num_decoder_layers=3, decoder_start_token_id=0)

# name -> (config class, config kwargs, seq2seq-lm class, base class)
VARIANTS: dict[str, tuple[str, dict, str, str]] = {
    # The Transformer as Marian implements it: post-norm, sinusoidal positions, scaled embeddings.
    "marian": ("MarianConfig", dict(_bart_shape, scale_embedding=True, activation_function="swish",
                                    pad_token_id=VOCAB - 1, decoder_start_token_id=VOCAB - 1, eos_token_id=0,
                                    forced_eos_token_id=0),
               "MarianMTModel", "MarianModel"),
    "marian-separate-embeddings": (
        "MarianConfig", dict(_bart_shape, scale_embedding=True, share_encoder_decoder_embeddings=False,
                             pad_token_id=VOCAB - 1, decoder_start_token_id=VOCAB - 1, eos_token_id=0),
        "MarianMTModel", "MarianModel"),
    "bart": ("BartConfig", dict(_bart_shape), "BartForConditionalGeneration", "BartModel"),
    "bart-scaled-untied": (
        "BartConfig", dict(_bart_shape, encoder_layers=3, decoder_layers=1, scale_embedding=True,
                           tie_word_embeddings=False, activation_function="gelu_new"),
        "BartForConditionalGeneration", "BartModel"),
    "mbart": ("MBartConfig", dict(_bart_shape, encoder_attention_heads=4, decoder_attention_heads=3,
                                  scale_embedding=True), "MBartForConditionalGeneration", "MBartModel"),
    "pegasus": ("PegasusConfig", dict(_bart_shape, scale_embedding=True, activation_function="relu"),
                "PegasusForConditionalGeneration", "PegasusModel"),
    # T5 v1.0: ReLU, tied head rescaled by d_model**-0.5; 5 heads of 10 (inner width 50, not 48).
    "t5": ("T5Config", dict(_t5_shape, d_kv=10, d_ff=70, num_heads=5, relative_attention_num_buckets=8,
                            relative_attention_max_distance=12), "T5ForConditionalGeneration", "T5Model"),
    # T5 v1.1: gated GELU, untied head; 6 buckets, so 3 exact offsets and 0 logarithmic per side.
    "t5-v1.1": ("T5Config", dict(_t5_shape, d_kv=16, d_ff=60, num_heads=3, relative_attention_num_buckets=6,
                                 relative_attention_max_distance=9, feed_forward_proj="gated-gelu",
                                 tie_word_embeddings=False), "T5ForConditionalGeneration", "T5Model"),
    # Big Bird-Pegasus: block-sparse encoder attention (blocks of 2, 1 random) on 17-token sources.
    "bigbird-pegasus": ("BigBirdPegasusConfig", dict(_bart_shape, encoder_layers=3, decoder_layers=2,
                                                     block_size=2, num_random_blocks=1, use_bias=True),
                        "BigBirdPegasusForConditionalGeneration", "BigBirdPegasusModel"),
    # Switch Transformer: T5 v1.0 with 3 experts in the encoder's layer 1 and every decoder layer.
    # Stacks of one depth: transformers 4.57.6 sizes the decoder's cache by the encoder's depth.
    "switch": ("SwitchTransformersConfig", dict(_t5_shape, num_decoder_layers=2, d_kv=10, d_ff=40, num_heads=5,
                                                num_experts=3, num_sparse_encoder_layers=1,
                                                num_sparse_decoder_layers=2, relative_attention_num_buckets=8),
               "SwitchTransformersForConditionalGeneration", "SwitchTransformersModel"),
    # Every encoder layer sparse, 4 experts of room 2 with a router bias: tokens are dropped.
    "switch-overflow": ("SwitchTransformersConfig", dict(_t5_shape, num_layers=3, d_kv=8, d_ff=36, num_heads=4,
                                                         num_experts=4, expert_capacity=2, router_bias=True,
                                                         num_sparse_encoder_layers=3, num_sparse_decoder_layers=1),
                        "SwitchTransformersForConditionalGeneration", "SwitchTransformersModel"),
}  # fmt: skip

# generation_config.json settings, as the released checkpoints carry them (OPUS-MT forbids its pad).
GENERATION = {"marian": dict(bad_words_ids=[[VOCAB - 1]])}


def pad_id(variant: str) -> int:
    return VARIANTS[variant][1].get("pad_token_id", 0 if variant.startswith(("t5", "pegasus", "switch")) else 1)


def build_reference(variant: str, head: str = "seq2seq-lm"):
    tf = transformers()
    config_cls, kw, lm_cls, base_cls = VARIANTS[variant]
    config = getattr(tf, config_cls)(**kw)
    torch.manual_seed(0)
    # head "encoder": the encoder alone (T5EncoderModel, SwitchTransformersEncoderModel)
    cls = {"seq2seq-lm": lm_cls, "encoder": base_cls.replace("Model", "EncoderModel")}.get(head, base_cls)
    model = getattr(tf, cls)(config).eval()
    if kw.get("tie_word_embeddings") is False and model.config.tie_word_embeddings and hasattr(model, "lm_head"):
        # transformers 5's T5Config turns tie_word_embeddings false into an unscaled head that is
        # still tied: untie it, as the checkpoints this describes (T5 v1.1, Flan-T5) have it.
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    randomize(model, seed=sum(map(ord, variant + head)) % 1000)
    restore_fixed_positions(model)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=gen) * 0.5)
    model.tie_weights()
    if head == "seq2seq-lm":
        for key, value in GENERATION.get(variant, {}).items():
            setattr(model.generation_config, key, value)
    return model


_saved = saved_references(build_reference)


@pytest.fixture(scope="session")
def saved_seq2seq(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("seq2seq"))

    def get(variant: str, head: str = "seq2seq-lm", safe: bool = True, folder: bool = False):
        ref, path = _saved(variant, head, safe, root)
        if folder:
            return ref, path
        return ref, lmatlas.load(path)

    return get


def padded_sources(variant: str, lengths=(SOURCE_LENGTH, 9, 4), seed: int = 1):
    """Right-padded sources (as tokenizers pad them), each ending in a real token."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB - 2, (len(lengths), max(lengths)), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate(lengths):
        ids[row, length:] = pad_id(variant)
        mask[row, length:] = 0
    return ids, mask


def targets(rows: int = 3, length: int = 7, seed: int = 2):
    return torch.randint(3, VOCAB - 2, (rows, length), generator=torch.Generator().manual_seed(seed))


pytestmark = pytest.mark.usefixtures("one_thread")


CASES = [(v, h) for v in VARIANTS for h in ("seq2seq-lm", "base")]


@pytest.mark.parametrize("variant,head", CASES)
def test_parity_padded_sources(variant, head, saved_seq2seq):
    ref, ours = saved_seq2seq(variant, head)
    assert ours.head_name == head
    assert ours.is_encoder_decoder
    ids, mask = padded_sources(variant)
    dec = targets()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        got = ours(ids, attention_mask=mask, decoder_input_ids=dec)
    field = "logits" if head == "seq2seq-lm" else "last_hidden_state"
    e, g = getattr(expected, field), got[field]
    assert g.shape == e.shape
    diff = (g - e).abs().max().item()
    assert diff <= TOL, f"{variant} {head}: max abs diff {diff:.2e}"
    # The encoder's output at real source tokens (padding positions are undefined).
    enc = (got.encoder_last_hidden_state - expected.encoder_last_hidden_state)[mask.bool()]
    assert enc.abs().max().item() <= TOL


@pytest.mark.parametrize("variant", ["bart", "t5-v1.1"])
def test_parity_pytorch_bin(variant, saved_seq2seq):
    ref, ours = saved_seq2seq(variant, safe=False)
    ids, mask = padded_sources(variant)
    dec = targets()
    with torch.no_grad():
        diff = ours(ids, attention_mask=mask, decoder_input_ids=dec).logits - ref(
            input_ids=ids, attention_mask=mask, decoder_input_ids=dec
        ).logits
    assert diff.abs().max().item() <= TOL


def test_encoder_outputs_reused(saved_seq2seq):
    _, ours = saved_seq2seq("mbart")
    ids, mask = padded_sources("mbart")
    dec = targets()
    with torch.no_grad():
        full = ours(ids, attention_mask=mask, decoder_input_ids=dec).logits
        encoded = ours.encode(ids, mask)
        again = ours(attention_mask=mask, decoder_input_ids=dec, encoder_outputs=encoded).logits
    assert torch.equal(full, again)


# Not where experts overflow: their capacity counts the tokens of one call.
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "switch-overflow"])
def test_cached_steps_equal_full_forward(variant, saved_seq2seq):
    """Prefill the decoder, then feed one and two tokens at a time through a Seq2SeqCache whose
    cross-attention keys and values are computed once per source and shared by two decoder rows
    per source (as beams share them): each step's logits equal a full forward pass's."""
    _, ours = saved_seq2seq(variant)
    ids, mask = padded_sources(variant, lengths=(SOURCE_LENGTH, 6))
    group = 2
    dec = targets(rows=2 * group, length=6)
    with torch.no_grad():
        full = ours(
            ids.repeat_interleave(group, 0), attention_mask=mask.repeat_interleave(group, 0), decoder_input_ids=dec
        ).logits
        encoded = ours.encode(ids, mask).last_hidden_state
        cache = ours.new_cache(2 * group, dec.shape[1], encoder_last_hidden_state=encoded, attention_mask=mask)
        assert isinstance(cache, Seq2SeqCache)
        assert cache.cross[0][0].shape[0] == 2  # one per source, not per decoder row
        steps = []
        for start, stop in ((0, 3), (3, 4), (4, 6)):
            steps.append(ours(decoder_input_ids=dec[:, start:stop], cache=cache).logits)
    diff = (torch.cat(steps, dim=1) - full).abs().max().item()
    assert diff <= TOL, f"{variant}: cached vs full max abs diff {diff:.2e}"


def test_tied_and_untied_heads(saved_seq2seq):
    _, bart = saved_seq2seq("bart")
    tokens = bart.backbone.encoder.embeddings.tokens.weight
    assert bart.backbone.decoder.embeddings.tokens.weight is tokens
    assert bart.head.decoder.weight is tokens
    _, untied = saved_seq2seq("bart-scaled-untied")
    assert untied.head.decoder.weight is not untied.backbone.decoder.embeddings.tokens.weight
    _, t5 = saved_seq2seq("t5")
    assert t5.head.decoder.weight is t5.backbone.encoder.embeddings.tokens.weight
    assert t5.head.scale == pytest.approx(48**-0.5)
    _, t5_11 = saved_seq2seq("t5-v1.1")
    assert t5_11.head.scale == 1.0
    assert t5_11.head.decoder.weight is not t5_11.backbone.decoder.embeddings.tokens.weight
    _, marian = saved_seq2seq("marian-separate-embeddings")
    enc, dec = marian.backbone.encoder.embeddings.tokens.weight, marian.backbone.decoder.embeddings.tokens.weight
    assert enc is not dec and not torch.equal(enc, dec)
    assert marian.head.decoder.weight is dec


def test_embeddings_stored_under_another_tied_name(saved_seq2seq, tmp_path):
    """Some checkpoints (facebook/bart-large-cnn) store the shared table as decoder.embed_tokens;
    some lack final_logits_bias, which then counts as zeros (no warning), as in transformers."""
    import json
    import warnings

    from safetensors.torch import load_file, save_file

    ref, folder = saved_seq2seq("bart", folder=True)
    state = load_file(f"{folder}/model.safetensors")
    state["model.decoder.embed_tokens.weight"] = state.pop("model.shared.weight")
    del state["final_logits_bias"]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(ref.config.to_dict()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = lmatlas.load(tmp_path)
    assert torch.equal(ours.backbone.encoder.embeddings.tokens.weight, ref.model.shared.weight)
    assert not ours.head.decoder.bias.any()


@pytest.mark.parametrize("scaled", [False, True], ids=["unscaled", "scaled"])
@pytest.mark.parametrize("lm_head", ["own", "copy", "absent"])
def test_t5_head_as_transformers_5_writes_it(scaled, lm_head, saved_seq2seq, tmp_path):
    """transformers 5 writes T5's config.json with tie_word_embeddings true and the scaling in
    scale_decoder_outputs (false for T5 v1.1), and stores lm_head when it is untied: the head is
    the stored lm_head unless it is absent or equal to the token table. The reference is computed
    explicitly from the decoder's last hidden state, as transformers 5 computes it."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from lmatlas.save import save_model

    tf = transformers()
    ref, folder = saved_seq2seq("t5-v1.1", folder=True)
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(tie_word_embeddings=True, scale_decoder_outputs=scaled)
    (tmp_path / "config.json").write_text(json.dumps(config))
    state = load_file(tmp_path / "model.safetensors")
    assert not torch.equal(state["lm_head.weight"], state["shared.weight"])
    if lm_head == "copy":
        state["lm_head.weight"] = state["shared.weight"].clone()
    elif lm_head == "absent":
        del state["lm_head.weight"]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours = lmatlas.load(tmp_path)
    tokens = ours.backbone.decoder.embeddings.tokens.weight
    assert (ours.head.decoder.weight is tokens) == (lm_head != "own")
    assert ours.head.scale == (48**-0.5 if scaled else 1.0)
    ids, mask = padded_sources("t5-v1.1")
    dec = targets()
    kw = dict(attention_mask=mask, decoder_input_ids=dec)
    with torch.no_grad():
        last = ref(input_ids=ids, output_hidden_states=True, **kw).decoder_hidden_states[-1]
        table = ref.lm_head.weight if lm_head == "own" else ref.shared.weight
        expected = (last * (48**-0.5 if scaled else 1.0)) @ table.t()
        got = ours(ids, **kw).logits
    assert (got - expected).abs().max().item() <= TOL
    save_model(ours, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["scale_decoder_outputs"] == scaled
    with torch.no_grad():
        assert torch.equal(lmatlas.load(tmp_path / "ours")(ids, **kw).logits, got)
    # transformers 4 reads tie_word_embeddings true as a tied, scaled head; lmatlas saves an untied
    # head with tie_word_embeddings false, which transformers 4 reads right when it is unscaled.
    readable = [tmp_path / "ours"] if lm_head == "own" and not scaled else []
    if int(tf.__version__.split(".")[0]) >= 5:
        readable = [tmp_path, tmp_path / "ours"]
    for folder in readable:
        with torch.no_grad():
            theirs = tf.T5ForConditionalGeneration.from_pretrained(folder).eval()(input_ids=ids, **kw).logits
        assert (theirs - expected).abs().max().item() <= TOL, folder


@pytest.mark.parametrize("variant", ["bart-scaled-untied", "mbart", "marian", "pegasus"])
def test_untied_tables_of_one_vocabulary(variant, tmp_path):
    """tie_word_embeddings false, with encoder and decoder tables of other values (transformers 5
    unties the three tables then, and saves each): each stack reads its own table, and lmatlas
    saves them back. transformers 4 ties the tables whatever the config says, so the reference is
    built untied by hand: what transformers 5 computes from such a checkpoint."""
    import copy

    from safetensors import safe_open

    from lmatlas.save import save_model

    tf = transformers()
    config_cls, kw, lm_cls, _ = VARIANTS[variant]
    torch.manual_seed(0)
    ref = getattr(tf, lm_cls)(getattr(tf, config_cls)(**{**kw, "tie_word_embeddings": False})).eval()
    randomize(ref, seed=11)
    restore_fixed_positions(ref)
    decoder = ref.get_decoder()
    decoder.embed_tokens = copy.deepcopy(decoder.embed_tokens)
    with torch.no_grad():
        table = decoder.embed_tokens.weight
        table.add_(torch.randn(table.shape, generator=torch.Generator().manual_seed(3)) * 0.1)
    ref.save_pretrained(tmp_path / "theirs")
    ours = lmatlas.load(tmp_path / "theirs")
    enc, dec = ours.backbone.encoder.embeddings.tokens.weight, ours.backbone.decoder.embeddings.tokens.weight
    assert torch.equal(enc, ref.get_encoder().embed_tokens.weight) and torch.equal(dec, table)
    assert ours.head.decoder.weight is not dec
    ids, mask = padded_sources(variant)
    dec_ids = targets()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids).logits
        got = ours(ids, attention_mask=mask, decoder_input_ids=dec_ids).logits
    assert (got - expected).abs().max().item() <= TOL
    save_model(ours, tmp_path / "ours")
    with safe_open(str(tmp_path / "ours" / "model.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"} <= stored
    # Marian saves two tables as two vocabularies; the others, as transformers 5 saves them.
    assert ("model.shared.weight" in stored) == (variant != "marian")
    again = lmatlas.load(tmp_path / "ours")
    with torch.no_grad():
        assert torch.equal(again(ids, attention_mask=mask, decoder_input_ids=dec_ids).logits, got)
    # transformers 4 reads untied tables of one vocabulary into one table; two vocabularies it reads.
    if variant == "marian" or int(tf.__version__.split(".")[0]) >= 5:
        back = getattr(tf, lm_cls).from_pretrained(tmp_path / "ours").eval()
        with torch.no_grad():
            theirs = back(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids).logits
        assert (theirs - expected).abs().max().item() <= TOL


# ---- bad checkpoints -------------------------------------------------------------------------


def _copy_folder(saved_seq2seq, variant, tmp_path):
    import shutil

    _, folder = saved_seq2seq(variant, folder=True)
    dst = tmp_path / variant
    shutil.copytree(folder, dst)
    return dst


def test_bad_feed_forward_proj(saved_seq2seq, tmp_path):
    import json

    folder = _copy_folder(saved_seq2seq, "t5", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["feed_forward_proj"] = "gated-gelu-extra"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(lmatlas.LmatlasError, match="config.json: cannot be read as a t5 config .*feed_forward_proj"):
        lmatlas.load(folder)
    folder = _copy_folder(saved_seq2seq, "bart", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["activation_function"] = "wiggle"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(lmatlas.LmatlasError, match="cannot be read as a bart config .*activation_function 'wiggle'"):
        lmatlas.load(folder)


def test_missing_cross_attention_weight(saved_seq2seq, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy_folder(saved_seq2seq, "bart", tmp_path)
    state = load_file(folder / "model.safetensors")
    del state["model.decoder.layers.1.encoder_attn.k_proj.weight"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(lmatlas.LmatlasError, match="no weight model.decoder.layers.1.encoder_attn.k_proj.weight"):
        lmatlas.load(folder)


def test_decoder_depth_that_does_not_fit(saved_seq2seq, tmp_path):
    import json

    folder = _copy_folder(saved_seq2seq, "t5-v1.1", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["d_kv"] = 12
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(lmatlas.LmatlasError, match="has shape .* but config.json implies"):
        lmatlas.load(folder)


def test_unknown_head_for_seq2seq(saved_seq2seq):
    _, folder = saved_seq2seq("marian", folder=True)
    with pytest.raises(lmatlas.LmatlasError, match="head 'causal-lm' is not available for marian; choose one of base, seq2seq-lm"):
        lmatlas.load(folder, head="causal-lm")


@pytest.mark.parametrize("variant", ["bart", "mbart", "t5"])
def test_padded_targets_and_hidden_states(variant, saved_seq2seq):
    """A right-padded decoder_attention_mask, and every layer's hidden states of both stacks."""
    ref, ours = saved_seq2seq(variant)
    ids, mask = padded_sources(variant)
    dec = targets()
    dec_mask = torch.ones_like(dec)
    dec_mask[1, 5:] = 0
    dec_mask[2, 2:] = 0
    kw = dict(attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask, output_hidden_states=True)
    with torch.no_grad():
        expected = ref(input_ids=ids, **kw)
        got = ours(ids, **kw)
    real = dec_mask.bool()
    assert (got.logits - expected.logits)[real].abs().max().item() <= TOL
    for name, keep in (("decoder_hidden_states", real), ("encoder_hidden_states", mask.bool())):
        assert len(got[name]) == len(expected[name])
        for g, e in zip(got[name], expected[name]):
            assert (g - e)[keep].abs().max().item() <= TOL, name


def test_bfloat16_generates(saved_seq2seq):
    _, folder = saved_seq2seq("t5-v1.1", folder=True)
    model = lmatlas.load(folder, dtype="bfloat16")
    ids, mask = padded_sources("t5-v1.1")
    out = model.generate(ids, mask, max_new_tokens=4, num_beams=2)
    assert out.shape == (3, 5)


@pytest.mark.parametrize("variant", ["switch", "switch-overflow"])
def test_switch_router_losses(variant, saved_seq2seq):
    """The router z-loss and load-balancing loss of each stack as transformers computes them
    (dropped tokens count as routed to expert 0 there).

    One difference, on purpose: transformers reports no router loss for a stack whose every
    layer is sparse (a sparse step of 1: its test is ``sparse_step > 1``); lmatlas counts them
    there too, with the same formulas (transformers' own functions, checked below)."""
    from transformers.models.switch_transformers import modeling_switch_transformers as st

    from lmatlas.moe import router_losses, sparse_stacks

    ref, ours = saved_seq2seq(variant)
    ids, mask = padded_sources(variant)
    dec = targets()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_router_logits=True)
        ours(ids, attention_mask=mask, decoder_input_ids=dec)
    steps = (ref.config.encoder_sparse_step, ref.config.decoder_sparse_step)
    for stack, step, z_ref, aux_ref in zip(sparse_stacks(ours), steps,
                                           (expected.encoder_z_loss, expected.decoder_z_loss),
                                           (expected.encoder_aux_loss, expected.decoder_aux_loss)):
        z, aux = router_losses([stack])
        if step == 1:
            assert z_ref == 0 and aux_ref == 0
            logits = torch.cat([m.routing[0] for m in stack], 1)
            expert = torch.cat([m.routing[1] for m in stack], 1)
            z_ref, aux_ref = st.router_z_loss_func(logits), st.load_balancing_loss_func(logits.softmax(-1), expert)
        assert abs(z.item() - float(z_ref)) <= 1e-5 and abs(aux.item() - float(aux_ref)) <= 1e-5
    if variant == "switch-overflow":  # some tokens found their expert full
        assert any(not m.routing[2].all() for m in sparse_stacks(ours)[0])
