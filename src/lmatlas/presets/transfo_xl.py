"""Transformer-XL (Dai et al., 2019; transformers' ``transfo-xl``): a decoder that reads a long
text segment by segment with a memory of the previous segments' hidden states, relative
positions (``lmatlas.recurrence``), and adaptive input embeddings and softmax over a large word
vocabulary (``lmatlas.adaptive``)."""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import LmatlasError
from ._maps import FirstOf, WeightMap, hf_common, linear, norm
from .preset import Preset

# TransfoXLConfig's defaults: the WikiText-103 model's shape.
_DEFAULTS = dict(
    vocab_size=267735, cutoffs=[20000, 40000, 200000], d_model=1024, d_embed=1024, n_head=16, d_head=64,
    d_inner=4096, div_val=4, pre_lnorm=False, n_layer=18, mem_len=1600, clamp_len=1000, same_length=True,
    dropout=0.1, dropatt=0.0, untie_r=True, layer_norm_epsilon=1e-5, eos_token_id=0,
)  # fmt: skip


def config(hf: dict, head: str) -> ModelConfig:
    hf = {**_DEFAULTS, **hf}
    if hf.get("attn_type", 0) != 0:
        raise LmatlasError(f"attn_type {hf['attn_type']} is not supported: lmatlas runs Transformer-XL's own relative "
                           "attention (attn_type 0), the only one transformers implements and the checkpoints use")
    if hf.get("sample_softmax", -1) > 0:
        raise LmatlasError("sample_softmax is not supported (transformers does not implement it either): set it to -1")
    if not isinstance(hf["mem_len"], int) or hf["mem_len"] < 0:
        raise LmatlasError(f"mem_len must be a number of tokens, 0 or more, not {hf['mem_len']!r}")
    if head == "sequence-classification" and hf["d_embed"] != hf["d_model"]:
        raise LmatlasError(f"TransfoXLForSequenceClassification scores states of width d_embed ({hf['d_embed']}), "
                           f"but the model's are d_model ({hf['d_model']}) wide: the classifier needs them equal")
    cutoffs = [int(c) for c in hf["cutoffs"]]
    if cutoffs != sorted(set(cutoffs)) or (cutoffs and not 0 < cutoffs[0] <= cutoffs[-1] < hf["vocab_size"]):
        raise LmatlasError(f"cutoffs {cutoffs} must rise strictly between 0 and vocab_size ({hf['vocab_size']})")
    ties = hf.get("tie_projs")
    if ties is None:  # transformers derives it from proj_share_all_but_first, and writes it
        ties = [False] + [bool(hf.get("proj_share_all_but_first", True))] * len(cutoffs)
    return ModelConfig(
        model_type="transfo-xl",
        vocab_size=hf["vocab_size"],
        hidden_size=hf["d_model"],
        embedding_size=hf["d_embed"],
        num_layers=hf["n_layer"],
        num_heads=hf["n_head"],
        head_dim=hf["d_head"],
        intermediate_size=hf["d_inner"],
        position_embedding="relative",
        memory_length=hf["mem_len"],
        clamp_length=hf["clamp_len"],
        same_length=hf["same_length"],
        relative_bias_per_layer=hf["untie_r"],
        adaptive_cutoffs=cutoffs,
        adaptive_div=hf["div_val"],
        tie_projections=[bool(t) for t in ties],
        classify_before_first_pad=True,
        norm_position="pre" if hf["pre_lnorm"] else "post",
        norm_eps=hf["layer_norm_epsilon"],
        activation="relu",
        attention_bias=False,
        causal=True,
        embedding_norm=False,
        final_norm=False,
        hidden_dropout=hf["dropout"],
        attention_dropout=hf["dropatt"],
        **hf_common(hf),
    )


def _tied_projection(cfg: ModelConfig, i: int) -> bool:
    return bool(cfg.tie_projections and i < len(cfg.tie_projections) and cfg.tie_projections[i])


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    from ..adaptive import cluster_widths, clusters

    widths = cluster_widths(cfg)
    tables = 1 if cfg.adaptive_div == 1 else len(widths)
    projected = cfg.adaptive_div != 1 or widths[0] != cfg.hidden_size
    backbone: WeightMap = {}
    for i in range(tables):
        backbone[f"backbone.embeddings.tables.{i}.weight"] = f"word_emb.emb_layers.{i}.weight"
        if projected:
            backbone[f"backbone.embeddings.projections.{i}"] = f"word_emb.emb_projs.{i}"
    shared = not cfg.relative_bias_per_layer
    if shared:  # one tensor that transformers stores at the top and under every layer's name
        for ours, theirs in (("content_bias", "r_w_bias"), ("position_bias", "r_r_bias")):
            names = (theirs, *(f"layers.{i}.dec_attn.{theirs}" for i in range(cfg.num_layers)))
            backbone[f"backbone.{ours}"] = FirstOf(names, aliases="always")
    for i in range(cfg.num_layers):
        ours, theirs = f"backbone.layers.{i}", f"layers.{i}"
        backbone |= linear(f"{ours}.attn.qkv", f"{theirs}.dec_attn.qkv_net", bias=False)
        backbone |= linear(f"{ours}.attn.positions", f"{theirs}.dec_attn.r_net", bias=False)
        backbone |= linear(f"{ours}.attn.out", f"{theirs}.dec_attn.o_net", bias=False)
        backbone |= norm(f"{ours}.attn.norm", f"{theirs}.dec_attn.layer_norm")
        if not shared:
            backbone[f"{ours}.attn.content_bias"] = f"{theirs}.dec_attn.r_w_bias"
            backbone[f"{ours}.attn.position_bias"] = f"{theirs}.dec_attn.r_r_bias"
        backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.pos_ff.CoreNet.0")
        backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.pos_ff.CoreNet.3")
        backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.pos_ff.layer_norm")
    heads: WeightMap = {}
    if head == "sequence-classification":
        heads = linear("head.out", "score", bias=False)
    elif head == "causal-lm":
        if len(clusters(cfg)) > 1:
            heads = {"head.cluster_weight": "crit.cluster_weight", "head.cluster_bias": "crit.cluster_bias"}
        for i in range(tables):
            heads |= linear(f"head.outputs.{i}", f"crit.out_layers.{i}", bias=True)
            if cfg.tie_word_embeddings:
                del heads[f"head.outputs.{i}.weight"]
        for i in range(len(widths) if projected else 0):
            if not _tied_projection(cfg, i):
                heads[f"head.projections.{i}"] = f"crit.out_projs.{i}"
    return backbone, heads


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, require

    require(cfg, "Transformer-XL", causal=True, norm="layernorm", position_embedding="relative", activation="relu",
            attention_bias=False, mlp_bias=True, gated_mlp=False, embedding_norm=False, final_norm=False,
            num_kv_heads=cfg.num_heads, classify_before_first_pad=True, norm_affine=True)
    if cfg.memory_length is None or cfg.adaptive_cutoffs is None:
        raise LmatlasError("a Transformer-XL config.json needs a memory (mem_len) and the adaptive softmax's cutoffs")
    n = len(cfg.adaptive_cutoffs) + 1
    ties = list(cfg.tie_projections or [])
    return dict(
        common(cfg),
        model_type="transfo-xl",
        d_model=cfg.hidden_size,
        d_embed=cfg.embedding_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        d_head=cfg.head_dim,
        d_inner=cfg.intermediate_size,
        mem_len=cfg.memory_length,
        clamp_len=cfg.clamp_length,
        same_length=cfg.same_length,
        untie_r=cfg.relative_bias_per_layer,
        cutoffs=list(cfg.adaptive_cutoffs),
        div_val=cfg.adaptive_div,
        tie_projs=ties + [False] * (n - len(ties)),
        pre_lnorm=cfg.norm_position == "pre",
        layer_norm_epsilon=cfg.norm_eps,
        dropout=cfg.hidden_dropout,
        dropatt=cfg.attention_dropout,
        attn_type=0,
        sample_softmax=-1,
        adaptive=True,
    )


def buffers(cfg: ModelConfig) -> dict:
    """The sinusoids' frequencies, which transformers keeps as a buffer (``pos_emb.inv_freq``)."""
    from ..recurrence import inverse_frequencies

    return {"pos_emb.inv_freq": inverse_frequencies(cfg.hidden_size)}


PRESET = Preset(
    name="transfo_xl",
    model_types=("transfo-xl",),
    skeleton="decoder",
    prefix="transformer",
    heads={"LMHeadModel": "causal-lm", "ForSequenceClassification": "sequence-classification", "Model": "base"},
    class_prefix="TransfoXL",
    tokenizer_family=None,  # the folder's tokenizer.json decides (transformers' own is a pickled word list)
    config=config,
    weights=weights,
    to_hf=to_hf,
    class_suffixes={"causal-lm": "LMHeadModel"},
    buffers=buffers,
)
