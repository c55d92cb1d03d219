"""The one configuration of every lmatlas model.

A landmark model is a set of switches on the same blocks. Each switch is named after the idea
in its paper; a preset (``lmatlas.presets``) translates a checkpoint's ``config.json`` into
these fields. The skeletons (encoder, decoder, encoder-decoder) read nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import LmatlasError
from .xlnet_config import XLNetSettings, settings as xlnet_settings

NORMS = ("layernorm", "rmsnorm")
# "post": x = norm(x + f(x)) (the Transformer, GPT, BERT); "pre": x = x + f(norm(x)) (GPT-2 and
# after); "parallel": x = x + attention(norm(x)) + mlp(norm'(x)), both branches read the layer's
# input (GPT-J, Falcon), through one norm or two (``parallel_norms``).
NORM_POSITIONS = ("post", "pre", "parallel")
POSITION_EMBEDDINGS = ("learned", "sinusoidal", "rotary", "alibi", "relative", "none")
# Rotary scalings of the frequencies that depend only on the config (not on the sequence length).
ROPE_TYPES = ("default", "linear", "llama3")


def rope_type(rope_scaling: dict[str, Any] | None) -> str:
    """The rotary scaling a config.json asks for (``rope_type``, or ``type`` in older files)."""
    scaling = rope_scaling or {}
    return scaling.get("rope_type", scaling.get("type", "default"))


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """An image or patch size given as one side (a square) or as (height, width)."""
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


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
    # Sinusoidal tables are computed, not read, unless the checkpoint stores them (DistilBERT).
    # "interleaved": sin on even, cos on odd dimensions (the Transformer); "concat": all sines
    # then all cosines (CTRL, after tensor2tensor).
    positions_stored: bool = True
    sinusoidal_layout: str = "interleaved"
    # OPT counts positions over the attention mask (padding does not advance them) even without
    # a cache; the others count 0, 1, 2... unless the caller passes position ids.
    positions_from_mask: bool = False
    # Rotary position embeddings (RoFormer; GPT-NeoX, Falcon, Llama): how many dimensions of each
    # head rotate (None: all), the frequency base, and whether pairs are (i, i + d/2) ("rotate
    # half", GPT-NeoX) or neighbours (2i, 2i + 1, GPT-J's interleave).
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    rotary_interleaved: bool = False
    rope_scaling: dict[str, Any] | None = None
    # ALiBi (Press et al., 2021): BLOOM adds the bias to the scaled scores; Falcon adds it before
    # scaling, so its slopes shrink by 1/sqrt(head_dim).
    alibi_before_scale: bool = False
    # Embedding multiplier: CTRL scales token embeddings by sqrt(hidden_size), as the Transformer.
    embedding_scale: float = 1.0
    embedding_projection_bias: bool = True
    # OPT-350m: only the word embeddings are narrow (embedding_size = word_embed_proj_dim); they
    # are projected in, positions are added at the model width, and the last hidden state is
    # projected back out to the narrow width for the tied LM head.
    output_projection: bool = False
    # RoBERTa counts positions from padding_idx + 1 and gives padding the padding position.
    positions_from_padding: bool = False
    position_offset: int = 0
    type_vocab_size: int = 0
    # ERNIE 2.0/3.0: a third embedding table, by task type (use_task_id), added like token types.
    task_type_vocab_size: int = 0
    norm: str = "layernorm"
    norm_eps: float = 1e-12
    norm_position: str = "post"
    # Falcon's new decoder architecture normalises attention and MLP inputs separately.
    parallel_norms: int = 1
    # BLOOM's apply_residual_connection_post_layernorm: the residual is the normalised input.
    residual_from_norm: bool = False
    # OPT's layer_norm_elementwise_affine=False: norms without weight and bias.
    norm_affine: bool = True
    embedding_norm: bool = True
    final_norm: bool = False
    final_norm_eps: float | None = None
    activation: str = "gelu"
    gated_mlp: bool = False
    attention_bias: bool = True
    # The q/k/v projections' biases when they differ from the output projection's (GPT-Neo: only
    # the output projection has one). None: as attention_bias.
    qkv_bias: bool | None = None
    # Score scale: None is 1/sqrt(head_dim); GPT-Neo does not scale (1.0).
    attention_scale: float | None = None
    # GPT-2's scale_attn_by_inverse_layer_idx (from the Mistral/Stanford CRFM runs).
    attention_scale_by_inverse_layer: bool = False
    # GPT-Neo's (GPT-3's) alternating attention: per layer "global" or "local", and the window
    # of the local layers (a query sees itself and the window - 1 tokens before it).
    attention_layers: list[str] | None = None
    local_attention_window: int | None = None
    mlp_bias: bool = True
    lm_head_bias: bool = False
    # A dense layer + activation over the first token, part of the base model (BERT, ALBERT).
    pooler_activation: str | None = None
    # Cross-layer parameter sharing (ALBERT): layer i uses group int(i / (layers / groups)), and
    # each group holds `inner_group_size` blocks applied in turn. ALBERT shares even with one
    # group of one block (every layer is the same block); more than one of either implies it.
    cross_layer_sharing: bool = False
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
    # Encoder-decoders (the Transformer, BART, T5): the fields above describe the encoder (and
    # what both stacks share); the decoder's depth, heads, MLP width and target vocabulary where
    # they differ (None: as the encoder's). ``cross_attention`` marks the decoder's own config:
    # each of its layers also attends to the encoder's output.
    is_encoder_decoder: bool = False
    decoder_layers: int | None = None
    decoder_heads: int | None = None
    decoder_intermediate_size: int | None = None
    decoder_vocab_size: int | None = None
    # Encoder and decoder read one token table (all but Marian's separate-vocabulary models, and
    # checkpoints of untied tables that hold different values: see ``presets.bart.family_ties``).
    shared_embeddings: bool = True
    cross_attention: bool = False
    decoder_start_token_id: int | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | list[int] | None = None
    # T5's relative position buckets: half exact offsets, half logarithmic up to max_distance.
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    # Marian and Pegasus build their sinusoidal table in double precision (numpy), then round it.
    positions_float64: bool = False
    # T5 v1.0 rescales the last hidden state by d_model**-0.5 before its tied vocabulary projection.
    lm_head_scale: float = 1.0
    # Big Bird (Zaheer et al., 2020): block-sparse attention in the encoder (``sparse_attention``):
    # blocks of ``block_size`` tokens, each reading global, neighbouring and ``num_random_blocks``
    # random blocks; sequences too short for the pattern get full attention.
    block_sparse: bool = False
    block_size: int = 64
    num_random_blocks: int = 3
    # Big Bird's question-answering head: an MLP (with its residual and norm) before the span
    # scores, and the question's tokens (up to the first ``sep_token_id``) kept out of the answer.
    question_head_sep: int | None = None
    # Switch Transformer (Fedus et al., 2021): the MLP of every ``sparse_step``-th layer (the
    # decoder's by ``decoder_sparse_step``) is a mixture of ``num_experts`` experts; a router
    # sends each token to one, at most ``expert_capacity`` tokens per expert and sequence (the
    # rest skip the MLP). Training adds the router z-loss and the load-balancing loss.
    num_experts: int = 0
    sparse_step: int = 0
    decoder_sparse_step: int | None = None
    expert_capacity: int = 64
    router_bias: bool = False
    router_jitter_noise: float = 0.0
    router_z_loss_coef: float = 0.001
    router_aux_loss_coef: float = 0.001
    # Vision Transformers (ViT, Swin, CLIP's image tower): an image of ``image_size`` (height,
    # width) is cut into ``patch_size`` patches of ``num_channels``, each embedded by one linear
    # map (a strided convolution, with a bias unless ``patch_bias`` is off, as in CLIP); ViT and
    # CLIP put a learned class token before them. None: the model reads token ids.
    image_size: tuple[int, int] | None = None
    patch_size: tuple[int, int] = (16, 16)
    num_channels: int = 3
    patch_bias: bool = True
    # The pooled output where no dense pooler makes it: "class-norm", the class token through the
    # last norm, which the hidden states do not pass (CLIP's image tower); "eos", the state at the
    # end-of-text token (CLIP's text tower: ``eos_token_id``, or the largest id when it is 2).
    pooling: str | None = None
    # Swin: the depth and heads of each stage (the width doubles from one to the next, from
    # ``hidden_size``), the side of its attention windows, and the MLP's width as a multiple of
    # the stage's. None: one stage of full attention (every other model).
    stage_depths: list[int] | None = None
    stage_heads: list[int] | None = None
    window_size: int | None = None
    mlp_ratio: float = 4.0
    # Transformer-XL (Dai et al., 2019; ``recurrence.py``): segment-level recurrence, each layer
    # also attending to the hidden states of the previous ``memory_length`` tokens, kept without
    # gradient (None: no memory, every other model); relative positions, sinusoids of the
    # distance clamped at ``clamp_length`` (0: unclamped) with two learned biases per head, one
    # pair per layer or one shared by all (``relative_bias_per_layer``); ``same_length``: every
    # token attends to as many positions as the memory holds. Adaptive input and softmax
    # (``adaptive.py``): the vocabulary cut at ``adaptive_cutoffs`` into clusters, cluster i of
    # width embedding_size // adaptive_div**i, its projection tied to the input's or not
    # (``tie_projections``, per cluster). Its classifier reads the token before the first
    # padding token (``classify_before_first_pad``), as transformers' older decoders did.
    memory_length: int | None = None
    clamp_length: int = 0
    same_length: bool = False
    relative_bias_per_layer: bool = True
    adaptive_cutoffs: list[int] | None = None
    adaptive_div: int = 1
    tie_projections: list[bool] | None = None
    classify_before_first_pad: bool = False
    # The Decision Transformer (Chen et al., 2021): a GPT-2 over trajectories, each step three
    # tokens (return-to-go, state, action) embedded by linear maps from ``state_dim`` and
    # ``action_dim`` numbers, plus a learned embedding of the step's timestep (up to
    # ``max_episode_length``); actions are predicted through tanh when ``action_tanh``.
    state_dim: int | None = None
    action_dim: int | None = None
    max_episode_length: int = 4096
    action_tanh: bool = True
    # CLIP's text tower: an encoder (its output is pooled, never decoded) whose tokens see only
    # those before them, as a decoder's do.
    causal_encoder: bool = False
    # CLIP: both towers project their pooled output into one space of this width, and ``vision``
    # is the image tower's config beside this one, the text tower's.
    projection_dim: int | None = None
    vision: "ModelConfig | None" = None
    # XLNet (Yang et al., 2019): its own stack of relative, two-stream attention with memory
    # (``lmatlas.xlnet``), set by its settings; None for every other model.
    xlnet: XLNetSettings | None = None
    # The folder's generation_config.json, the defaults of ``generate()`` as in transformers.
    generation: dict[str, Any] = field(default_factory=dict, repr=False)
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
            raise LmatlasError(f"norm must be one of {NORMS}, not {self.norm!r}")
        if self.norm_position not in NORM_POSITIONS:
            raise LmatlasError(f"norm_position must be one of {NORM_POSITIONS}, not {self.norm_position!r}")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise LmatlasError(
                f"position_embedding must be one of {POSITION_EMBEDDINGS}, not {self.position_embedding!r}"
            )
        if self.num_layer_groups > 1 or self.inner_group_size > 1:
            self.cross_layer_sharing = True
        if self.qkv_bias is None:
            self.qkv_bias = self.attention_bias
        if self.position_embedding == "rotary" and self.rotary_dim is None:
            self.rotary_dim = self.head_dim
        if self.attention_layers is not None and len(self.attention_layers) != self.num_layers:
            raise LmatlasError(f"attention_layers names {len(self.attention_layers)} layers, not {self.num_layers}")
        if self.sinusoidal_layout not in ("interleaved", "concat"):
            raise LmatlasError(f"sinusoidal_layout must be interleaved or concat, not {self.sinusoidal_layout!r}")
        kind = rope_type(self.rope_scaling)
        if kind not in ROPE_TYPES:
            raise LmatlasError(f"rope_scaling type {kind!r} is not supported; lmatlas knows {', '.join(ROPE_TYPES)}")
        if self.cross_attention and self.norm_position == "parallel":
            raise LmatlasError("a decoder with cross-attention cannot use the parallel layout")
        if self.pooling not in (None, "class-norm", "eos", "mean"):
            raise LmatlasError(f"pooling must be class-norm, eos or mean, not {self.pooling!r}")
        if self.image_size is not None:
            self.image_size = _pair(self.image_size)
        self.patch_size = _pair(self.patch_size)
        if self.adaptive_cutoffs is not None:
            cuts = [int(c) for c in self.adaptive_cutoffs]
            if cuts != sorted(set(cuts)) or (cuts and not 0 < cuts[0] <= cuts[-1] < self.vocab_size):
                raise LmatlasError(f"adaptive_cutoffs must rise strictly between 0 and the vocabulary size "
                                   f"{self.vocab_size}, not {cuts}")
            if self.adaptive_div < 1:
                raise LmatlasError(f"adaptive_div must be 1 or more, not {self.adaptive_div}")
            self.adaptive_cutoffs = cuts
        self.xlnet = xlnet_settings(self.xlnet)
        if self.num_heads % self.num_kv_heads:
            raise LmatlasError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")

    def sparse_layer(self, i: int) -> bool:
        """Whether layer ``i``'s MLP is a mixture of experts: layers 1, 1 + step, 1 + 2 step...
        (every layer for a step of 1), as Switch Transformers' checkpoints place them."""
        step = self.sparse_step
        return self.num_experts > 0 and step > 0 and (step == 1 or i % step == 1)

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Patches down and across the image (a strided convolution drops the remainder)."""
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    @property
    def output_width(self) -> int:
        """The width of the last hidden states: Swin's last stage is 2^(stages - 1) times the first."""
        return self.hidden_size * 2 ** (len(self.stage_depths) - 1) if self.stage_depths else self.hidden_size

    def stage_config(self, i: int) -> "ModelConfig":
        """Swin's stage ``i``: its width, heads and MLP."""
        width = self.hidden_size * 2**i
        return self.replace(
            hidden_size=width, num_heads=self.stage_heads[i], num_kv_heads=None, head_dim=None,
            intermediate_size=int(self.mlp_ratio * width), num_layers=self.stage_depths[i],
        )  # fmt: skip

    @property
    def usable_positions(self) -> int | None:
        """How many positions the model can address, or None when nothing limits them."""
        if self.position_embedding in ("learned", "sinusoidal"):
            return self.max_positions - self.position_offset
        return None

    def encoder_config(self) -> "ModelConfig":
        """An encoder-decoder's encoder: the fields as they are, bidirectional."""
        return self.replace(is_encoder_decoder=False, causal=False, cross_attention=False)

    def decoder_config(self) -> "ModelConfig":
        """An encoder-decoder's decoder: causal, with cross-attention, at its own depth and width."""
        heads = self.decoder_heads or self.num_heads
        return self.replace(
            is_encoder_decoder=False,
            causal=True,
            cross_attention=True,
            num_layers=self.decoder_layers or self.num_layers,
            num_heads=heads,
            num_kv_heads=None,
            # BART-like models split the width among the heads; T5 gives head_dim (d_kv) itself.
            head_dim=self.head_dim if heads == self.num_heads else self.hidden_size // heads,
            intermediate_size=self.decoder_intermediate_size or self.intermediate_size,
            vocab_size=self.decoder_vocab_size or self.vocab_size,
            sparse_step=self.sparse_step if self.decoder_sparse_step is None else self.decoder_sparse_step,
            block_sparse=False,  # Big Bird-Pegasus: only the encoder's attention is sparse
        )

    @property
    def target_vocab_size(self) -> int:
        """The vocabulary the model predicts: the decoder's for an encoder-decoder."""
        return (self.decoder_vocab_size or self.vocab_size) if self.is_encoder_decoder else self.vocab_size

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)
