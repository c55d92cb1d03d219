"""Small builders for weight maps (see ``lmatlas.presets``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Derived:
    """A parameter computed from checkpoint tensors: ``fn(*tensors named by names)``.

    For layouts that differ from lmatlas' (GPT-2's transposed Conv1D weights, BLOOM's and
    Falcon's per-head interleaved q/k/v); ``fn`` only rearranges, it never changes a value.
    """

    names: tuple[str, ...]
    fn: Callable[..., torch.Tensor]

    def prefixed(self, prefix: str) -> "Derived":
        return Derived(tuple(prefix + n for n in self.names), self.fn)


@dataclass(frozen=True)
class FirstOf:
    """The first of ``names`` that the checkpoint holds.

    For a table tied under several names, of which a checkpoint stores any one (BART's shared
    embeddings as ``shared``, ``encoder.embed_tokens`` or ``decoder.embed_tokens``). ``fn``
    rearranges it as ``Derived`` does; with ``zeros``, a checkpoint without any of the names
    gets zeros, where transformers does the same (BART's ``final_logits_bias``). Saving writes
    the first name, and the others too when word embeddings are untied; with ``aliases`` false
    the others are only read, as a fallback (they do not belong to the saved layout); with
    ``aliases="always"`` every name is written (one tensor several modules share, which
    transformers reads under each: Transformer-XL's biases shared by all layers).
    """

    names: tuple[str, ...]
    fn: Callable[..., torch.Tensor] | None = None
    zeros: bool = False
    aliases: bool | str = True

    def prefixed(self, prefix: str) -> "FirstOf":
        return FirstOf(tuple(prefix + n for n in self.names), self.fn, self.zeros, self.aliases)


WeightMap = dict[str, "str | tuple[str, ...] | Derived | FirstOf"]


def _transpose(t: torch.Tensor) -> torch.Tensor:
    return t.t()


def conv1d(ours: str, theirs: str, bias: bool = True) -> WeightMap:
    """GPT's and GPT-2's Conv1D stores its weight as (in, out): transposed into a Linear."""
    m: WeightMap = {f"{ours}.weight": Derived((f"{theirs}.weight",), _transpose)}
    if bias:
        m[f"{ours}.bias"] = f"{theirs}.bias"
    return m


def grouped_qkv(ours: str, theirs: str, heads: int, kv_heads: int, head_dim: int, bias: bool = True) -> WeightMap:
    """A fused q/k/v stored per key/value group — for each group, its query heads, then its key
    and its value head (BLOOM and Falcon, where each head has one query, key and value, are the
    case kv_heads = heads) — rearranged into lmatlas' [all q; all k; all v]."""

    def regroup(t: torch.Tensor) -> torch.Tensor:
        g = heads // kv_heads
        rest = t.shape[1:]
        t = t.reshape(kv_heads, g + 2, head_dim, *rest)
        q = t[:, :g].reshape(heads * head_dim, *rest)
        k = t[:, g].reshape(kv_heads * head_dim, *rest)
        v = t[:, g + 1].reshape(kv_heads * head_dim, *rest)
        return torch.cat([q, k, v], dim=0)

    m: WeightMap = {f"{ours}.weight": Derived((f"{theirs}.weight",), regroup)}
    if bias:
        m[f"{ours}.bias"] = Derived((f"{theirs}.bias",), regroup)
    return m


def linear(ours: str, theirs: str, bias: bool = True) -> WeightMap:
    m: WeightMap = {f"{ours}.weight": f"{theirs}.weight"}
    if bias:
        m[f"{ours}.bias"] = f"{theirs}.bias"
    return m


def fused(ours: str, theirs: tuple[str, ...], bias: bool = True) -> WeightMap:
    """One lmatlas projection made of several checkpoint projections, concatenated."""
    m: WeightMap = {f"{ours}.weight": tuple(f"{t}.weight" for t in theirs)}
    if bias:
        m[f"{ours}.bias"] = tuple(f"{t}.bias" for t in theirs)
    return m


norm = linear  # a LayerNorm's weight and bias are named like a linear layer's


def hf_common(hf: dict) -> dict:
    """The config fields every family stores the same way in ``config.json``."""
    id2label = hf.get("id2label") or {}
    num_labels = hf.get("num_labels") or len(id2label) or 2
    return dict(
        pad_token_id=hf.get("pad_token_id"),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        id2label=id2label or {i: f"LABEL_{i}" for i in range(num_labels)},
        problem_type=hf.get("problem_type"),
        architectures=list(hf.get("architectures") or []),
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
        hf_config=hf,
    )


def bert_layers(num_layers: int, prefix: str = "encoder.layer") -> WeightMap:
    """BERT's layer names, shared by RoBERTa, XLM-R and ELECTRA."""
    m: WeightMap = {}
    for i in range(num_layers):
        ours, theirs = f"backbone.layers.{i}", f"{prefix}.{i}"
        att = f"{theirs}.attention"
        m |= fused(f"{ours}.attn.qkv", (f"{att}.self.query", f"{att}.self.key", f"{att}.self.value"))
        m |= linear(f"{ours}.attn.out", f"{att}.output.dense")
        m |= norm(f"{ours}.attn_norm", f"{att}.output.LayerNorm")
        m |= linear(f"{ours}.mlp.fc_in", f"{theirs}.intermediate.dense")
        m |= linear(f"{ours}.mlp.fc_out", f"{theirs}.output.dense")
        m |= norm(f"{ours}.mlp_norm", f"{theirs}.output.LayerNorm")
    return m


def bert_embeddings(token_types: bool = True) -> WeightMap:
    m: WeightMap = {
        "backbone.embeddings.tokens.weight": "embeddings.word_embeddings.weight",
        "backbone.embeddings.positions.weight": "embeddings.position_embeddings.weight",
    }
    if token_types:
        m["backbone.embeddings.token_types.weight"] = "embeddings.token_type_embeddings.weight"
    m |= norm("backbone.embeddings.norm", "embeddings.LayerNorm")
    return m


def mlm_head(dense: str, layer_norm: str, decoder: str, bias: str | None = None) -> WeightMap:
    """The masked-LM head of BERT's family (a dense layer, a norm, the decoder to the vocabulary),
    under each family's names; ``bias``: the decoder's bias when it is stored apart from it."""
    m = linear("head.dense", dense) | norm("head.norm", layer_norm)
    return m | {"head.decoder.weight": f"{decoder}.weight", "head.decoder.bias": bias or f"{decoder}.bias"}


def classifier_heads(head: str, pooled: str | None = None, token: str = "classifier") -> WeightMap:
    """Sequence / token classification and QA heads, as most families name them.

    ``pooled``: the checkpoint name of the sequence head's own dense layer, if it has one.
    """
    if head == "sequence-classification":
        m: WeightMap = {}
        if pooled is not None:
            m |= linear("head.pooler.dense", f"{pooled}.dense")
            m |= linear("head.out", f"{pooled}.out_proj")
        else:
            m |= linear("head.out", "classifier")
        return m
    if head == "token-classification":
        return linear("head.out", token)
    if head == "question-answering":
        return linear("head.out", "qa_outputs")
    return {}


ENCODER_HEADS = {
    "ForMaskedLM": "masked-lm",
    "ForSequenceClassification": "sequence-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "Model": "base",
}


DECODER_HEADS = {
    "LMHeadModel": "causal-lm",
    "DoubleHeadsModel": "causal-lm",
    "ForCausalLM": "causal-lm",
    "ForSequenceClassification": "sequence-classification",
    "Model": "base",
}


def decoder_common(hf: dict) -> dict:
    """Fields every decoder preset sets alike; a preset's own values override them."""
    common = hf_common(hf)
    return dict(common, causal=True, embedding_norm=False, final_norm=True)


def rope(hf: dict, default_base: float = 10000.0) -> dict:
    """``rotary_base`` and ``rope_scaling`` from either config layout: transformers 4 writes
    ``rope_theta`` and ``rope_scaling`` at the top level, transformers 5 one ``rope_parameters``
    dict holding the base, the type and the scaling factors."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        kind = params.get("rope_type", params.get("type", "default"))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"} if kind != "default" else None
        return {"rotary_base": params["rope_theta"], "rope_scaling": scaling}
    return {"rotary_base": hf.get("rope_theta", default_base), "rope_scaling": hf.get("rope_scaling")}


def lm_head(head: str, bias: bool = False) -> WeightMap:
    """transformers' ``lm_head``: read only when untied (tied, it is the token embeddings)."""
    if head != "causal-lm":
        return {}
    return linear("head.decoder", "lm_head", bias=bias)


def score(head: str, name: str = "score") -> WeightMap:
    """A decoder's sequence classifier: transformers' bias-free ``score`` (CTRL: ``classifier``)."""
    if head != "sequence-classification":
        return {}
    return linear("head.out", name, bias=False)


SEQ2SEQ_HEADS = {
    "ForConditionalGeneration": "seq2seq-lm",
    "MTModel": "seq2seq-lm",  # MarianMTModel
    "Model": "base",
}


def seq2seq_common(hf: dict) -> dict:
    """Fields every encoder-decoder preset sets alike."""
    return dict(
        hf_common(hf),
        is_encoder_decoder=True,
        decoder_start_token_id=hf.get("decoder_start_token_id"),
        forced_bos_token_id=hf.get("forced_bos_token_id"),
        forced_eos_token_id=hf.get("forced_eos_token_id"),
    )


def _flatten(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def final_logits_bias() -> WeightMap:
    """BART's family adds a (1, vocab) buffer to the logits; checkpoints without it mean zeros."""
    return {"head.decoder.bias": FirstOf(("final_logits_bias",), _flatten, zeros=True)}


def shared_tokens(names: tuple[str, ...] = ("shared", "encoder.embed_tokens", "decoder.embed_tokens")) -> WeightMap:
    """An encoder-decoder's one token table, stored under whichever of its tied names."""
    return {"backbone.encoder.embeddings.tokens.weight": FirstOf(tuple(f"{n}.weight" for n in names))}
