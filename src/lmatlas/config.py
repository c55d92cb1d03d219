"""The one configuration of every lmatlas model.

A landmark model is a set of switches on the same blocks. Each switch is named after the idea
in its paper; a preset (``lmatlas.presets``) translates a checkpoint's ``config.json`` into
these fields. The skeletons (encoder, decoder, encoder-decoder) read nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

NORMS = ("layernorm", "rmsnorm")
# "post": x = norm(x + f(x)) (the Transformer, BERT); "pre": x = x + f(norm(x)) (GPT-2 and
# after); "parallel": attention and MLP read the same normalised input (GPT-J, Falcon).
NORM_POSITIONS = ("post", "pre", "parallel")
POSITION_EMBEDDINGS = ("learned", "sinusoidal", "rotary", "alibi", "relative", "none")


@dataclass
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    # Grouped / multi-query attention: fewer key/value heads than query heads (Falcon, Llama).
    num_kv_heads: int | None = None
    head_dim: int | None = None
    # Factorised embeddings (ALBERT, ELECTRA): tokens are embedded at this width, then projected.
    embedding_size: int | None = None
    embedding_projection: bool = False
    max_positions: int = 512
    position_embedding: str = "learned"
    # RoBERTa counts positions from padding_idx + 1 and gives padding the padding position.
    positions_from_padding: bool = False
    position_offset: int = 0
    type_vocab_size: int = 0
    norm: str = "layernorm"
    norm_eps: float = 1e-12
    norm_position: str = "post"
    embedding_norm: bool = True
    final_norm: bool = False
    activation: str = "gelu"
    gated_mlp: bool = False
    attention_bias: bool = True
    mlp_bias: bool = True
    # A dense layer + activation over the first token, part of the base model (BERT, ALBERT).
    pooler_activation: str | None = None
    # Cross-layer parameter sharing (ALBERT): layer i uses group int(i / (layers / groups)), and
    # each group holds `inner_group_size` blocks applied in turn.
    num_layer_groups: int = 1
    inner_group_size: int = 1
    causal: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    # Heads. Activations are named as in ``blocks.ACTIVATIONS``.
    mlm_activation: str = "gelu"
    # Sequence classification over the first token: None uses the base model's pooler (BERT);
    # otherwise the head has its own dense layer with this activation (RoBERTa: tanh).
    classifier_activation: str | None = None
    num_labels: int = 2
    id2label: dict[int, str] = field(default_factory=dict)
    problem_type: str | None = None
    architectures: list[str] = field(default_factory=list)
    # The checkpoint's own config.json, kept for what only a preset or a task needs.
    hf_config: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_heads
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        if not self.id2label:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        self.id2label = {int(k): v for k, v in self.id2label.items()}
        self.num_labels = len(self.id2label)
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {self.norm!r}")
        if self.norm_position not in NORM_POSITIONS:
            raise ValueError(f"norm_position must be one of {NORM_POSITIONS}, not {self.norm_position!r}")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"position_embedding must be one of {POSITION_EMBEDDINGS}, not {self.position_embedding!r}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)
