"""XLNet (Yang et al., 2019): a Transformer-XL stack (relative positions and segments, memory of
earlier segments) pretrained by permutation language modelling with two-stream attention.

Its stack is its own (``lmatlas.xlnet``, ``lmatlas.two_stream``); its settings are
``ModelConfig.xlnet`` (``lmatlas.xlnet_config``). Heads: the language model (``lm_loss``, tied,
with a bias), sequence classification and multiple choice over the sequence summary, token
classification, extractive QA (``ForQuestionAnsweringSimple``) and SQuAD 2.0's beam search
(``ForQuestionAnswering``, here ``question-answering-beam``).
"""

from __future__ import annotations

import dataclasses

from ..config import ModelConfig
from ..errors import LmatlasError
from ..xlnet_config import XLNetSettings
from ._maps import WeightMap, hf_common, linear, norm
from .preset import Preset

# transformers' XLNetConfig defaults, where config.json leaves a field out.
_SETTINGS = {f.name: f.default for f in dataclasses.fields(XLNetSettings)}
_SETTINGS["summary_proj_to_labels"] = False  # read only when a config.json has it


def config(hf: dict, head: str) -> ModelConfig:
    d, heads = hf.get("d_model", 1024), hf.get("n_head", 16)
    if d % heads:
        raise LmatlasError(f"d_model ({d}) must be a multiple of n_head ({heads})")
    if "d_head" in hf and hf["d_head"] != d // heads:
        raise LmatlasError(f"d_head ({hf['d_head']}) must be d_model // n_head ({d // heads})")
    settings = XLNetSettings(**{k: hf.get(k, default) for k, default in _SETTINGS.items()})
    common = hf_common(hf)
    labels = len(common["id2label"])
    if settings.summary_proj_to_labels and settings.summary_use_proj and labels != d and head in (
            "sequence-classification", "multiple-choice"):
        raise LmatlasError(f"summary_proj_to_labels makes the summary {labels} wide, but its classifier reads d_model "
                           f"({d}); transformers' XLNet cannot run this config either: set it to false")
    dropout = hf.get("dropout", 0.1)
    return ModelConfig(
        model_type="xlnet",
        vocab_size=hf.get("vocab_size", 32000),
        hidden_size=d,
        num_layers=hf.get("n_layer", 24),
        num_heads=heads,
        intermediate_size=hf.get("d_inner", 4096),
        activation=hf.get("ff_activation", "gelu"),
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        position_embedding="relative",
        embedding_norm=False,
        attention_bias=False,
        lm_head_bias=True,
        hidden_dropout=dropout,
        attention_dropout=dropout,
        xlnet=settings,
        **common,
    )


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    backbone: WeightMap = {
        "backbone.embeddings.tokens.weight": "word_embedding.weight",
        "backbone.embeddings.query": "mask_emb",
    }
    names = {"q": "q", "k": "k", "v": "v", "o": "o", "r": "r", "content_bias": "r_w_bias",
             "position_bias": "r_r_bias", "segment_bias": "r_s_bias", "segment_embed": "seg_embed"}
    for i in range(cfg.num_layers):
        ours, theirs = f"backbone.layers.{i}", f"layer.{i}"
        backbone |= {f"{ours}.attn.{a}": f"{theirs}.rel_attn.{b}" for a, b in names.items()}
        backbone |= norm(f"{ours}.attn.norm", f"{theirs}.rel_attn.layer_norm")
        backbone |= linear(f"{ours}.mlp.fc_in", f"{theirs}.ff.layer_1")
        backbone |= linear(f"{ours}.mlp.fc_out", f"{theirs}.ff.layer_2")
        backbone |= norm(f"{ours}.mlp_norm", f"{theirs}.ff.layer_norm")
    return backbone, head_weights(cfg, head)


def head_weights(cfg: ModelConfig, head: str) -> WeightMap:
    if head == "causal-lm":
        return linear("head.decoder", "lm_loss")  # the weight is the token table's when tied
    if head in ("sequence-classification", "multiple-choice"):
        summary = linear("head.summary.dense", "sequence_summary.summary") if cfg.xlnet.summary_use_proj else {}
        return summary | linear("head.out", "logits_proj")
    if head == "token-classification":
        return linear("head.out", "classifier")
    if head == "question-answering":
        return linear("head.out", "qa_outputs")
    if head == "question-answering-beam":
        return (linear("head.start", "start_logits.dense") | linear("head.end.dense_in", "end_logits.dense_0")
                | norm("head.end.norm", "end_logits.LayerNorm") | linear("head.end.dense_out", "end_logits.dense_1")
                | linear("head.answer.dense_in", "answer_class.dense_0")
                | linear("head.answer.dense_out", "answer_class.dense_1", bias=False))
    return {}


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``)."""
    from ._inverse import common, plain_heads, require_usual

    if cfg.xlnet is None:
        raise LmatlasError("an XLNet config.json needs the xlnet settings")
    plain_heads(cfg, "XLNet")
    require_usual(cfg, "XLNet", norm="layernorm", norm_affine=True, position_embedding="relative", gated_mlp=False,
                  mlp_bias=True, attention_bias=False, attention_scale=None, lm_head_bias=True,
                  embedding_size=cfg.hidden_size, hidden_dropout=cfg.attention_dropout)
    settings = dataclasses.asdict(cfg.xlnet)
    if not settings["summary_proj_to_labels"]:
        settings.pop("summary_proj_to_labels")
    return dict(
        common(cfg),
        **settings,
        model_type="xlnet",
        d_model=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        d_head=cfg.head_dim,
        d_inner=cfg.intermediate_size,
        ff_activation=cfg.activation,
        untie_r=cfg.hf_config.get("untie_r", True),
        layer_norm_eps=cfg.norm_eps,
        dropout=cfg.hidden_dropout,
    )


PRESET = Preset(
    name="xlnet",
    model_types=("xlnet",),
    # An autoregressive language model (over permuted orders): `lmatlas generate` takes it.
    skeleton="decoder",
    prefix="transformer",
    heads={
        "LMHeadModel": "causal-lm",
        "ForSequenceClassification": "sequence-classification",
        "ForTokenClassification": "token-classification",
        "ForMultipleChoice": "multiple-choice",
        "ForQuestionAnsweringSimple": "question-answering",
        "ForQuestionAnswering": "question-answering-beam",
        "Model": "base",
    },
    class_prefix="XLNet",
    tokenizer_family="xlnet",
    config=config,
    weights=weights,
    to_hf=to_hf,
    class_suffixes={"causal-lm": "LMHeadModel", "question-answering": "ForQuestionAnsweringSimple"},
)
