"""Parameters and forward FLOPs of a model from its shape alone.

FLOPs count a multiply-add as two. A forward pass costs 2 FLOPs per weight that a token
multiplies by (attention, MLP and the vocabulary projection; embedding lookups are free) plus
4 · q_dim FLOPs per attended position and layer (scores and the weighted sum of values), the
convention of Hoffmann et al. (2022, appendix F) without the small softmax term.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog import EXTRA_DEFAULTS, ArchitecturePreset
from ..config import ModelConfig


@dataclass(frozen=True)
class ParamCount:
    """Parameters by part, and the weights one token multiplies by (for FLOPs)."""

    total: int
    embeddings: int  # lookup tables: tokens, positions, token types, relative-position biases
    encoder: int  # the encoder stack (0 for a decoder)
    decoder: int  # the decoder stack (0 for an encoder)
    head: int  # pooler, untied vocabulary projection and its bias
    matmul_encoder: int  # weights an encoder token multiplies by
    matmul_decoder: int  # weights a decoder token multiplies by, the vocabulary projection included
    idle: int = 0  # the experts' weights a token does not use (mixtures of experts)

    @property
    def active(self) -> int:
        """The parameters one token uses: all but the experts its router did not choose."""
        return self.total - self.idle


def shape_of(cfg: ModelConfig, name: str = "model", source: str | None = None) -> ArchitecturePreset:
    """A ``ModelConfig`` as a shape to count: its skeleton and decoder depth told by the config."""
    extra = dict(EXTRA_DEFAULTS)
    if cfg.is_encoder_decoder:
        extra["skeleton"] = "encoder-decoder"
        extra["num_decoder_layers"] = cfg.decoder_layers or cfg.num_layers
    else:
        extra["skeleton"] = "decoder" if cfg.causal else "encoder"
    extra["relative_attention_num_buckets"] = cfg.relative_attention_num_buckets
    return ArchitecturePreset(name=name, model=None, config=cfg, extra=extra, source=source)


def encoder_blocks(cfg: ModelConfig) -> tuple[int, int]:
    """(blocks stored, blocks applied) of an encoder stack; they differ when layers are shared."""
    if cfg.cross_layer_sharing:
        return cfg.num_layer_groups * cfg.inner_group_size, cfg.num_layers * cfg.inner_group_size
    return cfg.num_layers, cfg.num_layers


def _norm(cfg: ModelConfig, dim: int) -> int:
    if not cfg.norm_affine:
        return 0
    return dim if cfg.norm == "rmsnorm" else 2 * dim


def _attention(cfg: ModelConfig, extra: dict, self_attention: bool = True) -> tuple[int, int]:
    """(parameters, matmul weights) of one attention block."""
    h = cfg.hidden_size
    q = cfg.num_heads * cfg.head_dim
    kv = cfg.num_kv_heads * cfg.head_dim
    weights = h * q + 2 * h * kv + q * h
    biases = (q + 2 * kv if cfg.qkv_bias else 0) + (h if cfg.attention_bias else 0)
    if cfg.xlnet is not None:
        # XLNet: q, k, v, o and the distances' r, without biases; per head the three bias vectors
        # of its score (content, position, segment) and the two segment vectors (same, different).
        return 5 * h * q + 5 * q, 5 * h * q
    if self_attention and cfg.position_embedding == "relative" and extra.get("relative_attention") == "transformer-xl":
        # Transformer-XL: a key projection for the relative position encodings, and the two
        # learned bias vectors (content and position) of its attention score.
        weights += h * q
        biases += 2 * q
    return weights + biases, weights


def _mlp(cfg: ModelConfig) -> tuple[int, int]:
    h, i = cfg.hidden_size, cfg.intermediate_size
    n_in = 2 if cfg.gated_mlp else 1
    weights = n_in * h * i + i * h
    biases = n_in * i + h if cfg.mlp_bias else 0
    return weights + biases, weights


def _experts(cfg: ModelConfig, layers: int) -> tuple[int, int, int]:
    """(extra parameters, extra matmul weights, idle parameters) of a stack's mixture-of-experts
    layers over the dense ones: each holds ``num_experts`` MLPs and a router, and a token runs
    the router and one MLP."""
    sparse = sum(cfg.sparse_layer(i) for i in range(layers))
    if not sparse:
        return 0, 0, 0
    mlp, _ = _mlp(cfg)
    e, h = cfg.num_experts, cfg.hidden_size
    router = h * e + (e if cfg.router_bias else 0)
    return sparse * ((e - 1) * mlp + router), sparse * h * e, sparse * (e - 1) * mlp


def _layer(cfg: ModelConfig, extra: dict, cross_attention: bool = False) -> tuple[int, int]:
    attn, attn_mm = _attention(cfg, extra)
    mlp, mlp_mm = _mlp(cfg)
    norms = cfg.parallel_norms if cfg.norm_position == "parallel" else 2
    params = attn + mlp + norms * _norm(cfg, cfg.hidden_size)
    matmul = attn_mm + mlp_mm
    if cross_attention:
        cross, cross_mm = _attention(cfg, extra, self_attention=False)
        params += cross + _norm(cfg, cfg.hidden_size)
        matmul += cross_mm
    return params, matmul


def _positions(cfg: ModelConfig, extra: dict, width: int) -> int:
    pe = cfg.position_embedding
    if pe == "learned":
        return cfg.max_positions * width
    if pe == "sinusoidal":
        # A frozen table when the checkpoint stores it (it is then a parameter, as in
        # transformers); nothing when it is computed.
        return cfg.max_positions * width if cfg.positions_stored else 0
    if pe == "relative" and cfg.xlnet is None and extra.get("relative_attention", "buckets") == "buckets":
        # T5 and LaMDA: one learned bias per distance bucket and head, held by the first layer.
        return extra.get("relative_attention_num_buckets", 32) * cfg.num_heads
    return 0


def _transformer_xl(cfg: ModelConfig) -> ParamCount:
    """Transformer-XL with its language-model head (``lmatlas.recurrence``, ``lmatlas.adaptive``):
    adaptive embeddings and softmax, cluster by cluster; attention without biases but with the
    positions' projection W_r and the biases u and v (per layer, or one pair for all)."""
    h, q, e = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.embedding_size
    bounds = [0, *cfg.adaptive_cutoffs, cfg.vocab_size]
    sizes = [end - start for start, end in zip(bounds, bounds[1:])]
    one_table = cfg.adaptive_div == 1
    widths = [e if one_table else e // cfg.adaptive_div**i for i in range(len(sizes))]
    projected = not one_table or e != h
    tables = sum(n * w for n, w in zip(sizes, widths))
    inputs = tables + (h * (e if one_table else sum(widths)) if projected else 0)
    uv = 2 * q
    mlp, mlp_mm = _mlp(cfg)
    attn_mm = 3 * h * q + h * q + q * h  # q, k, v; W_r (one per key, about one per token); out
    layer = attn_mm + (uv if cfg.relative_bias_per_layer else 0) + mlp + 2 * _norm(cfg, h)
    decoder = cfg.num_layers * layer + (0 if cfg.relative_bias_per_layer else uv)
    ties = list(cfg.tie_projections or []) + [False] * len(sizes)
    head = (len(sizes) - 1) * (e + 1) + cfg.vocab_size + (0 if cfg.tie_word_embeddings else tables)
    head += sum(h * w for i, w in enumerate(widths) if projected and not ties[i])
    # A token's softmax, counted over every cluster (an upper bound: a tail runs for its own tokens).
    logits_mm = tables + (h * sum(widths) if projected else 0) + (len(sizes) - 1) * e
    mm = (h * e if projected else 0) + cfg.num_layers * (attn_mm + mlp_mm) + logits_mm
    return ParamCount(inputs + decoder + head, inputs, 0, decoder, head, 0, mm)


def count_params(shape: ArchitecturePreset | ModelConfig) -> ParamCount:
    """Parameters of a model from its shape alone, as transformers would count them.

    Tied weights count once; buffers (causal masks, rotary frequencies) are not parameters.
    """
    if isinstance(shape, ModelConfig):
        shape = shape_of(shape)
    cfg, extra = shape.config, shape.extra
    if cfg.memory_length is not None and cfg.adaptive_cutoffs is not None:
        return _transformer_xl(cfg)
    h, e, v = cfg.hidden_size, cfg.embedding_size, cfg.vocab_size

    tokens = v * e
    types = (cfg.type_vocab_size + cfg.task_type_vocab_size) * e
    emb_norm = _norm(cfg, e) if cfg.embedding_norm else 0
    project_in = 0
    if cfg.embedding_projection:
        project_in = e * h + (h if cfg.embedding_projection_bias else 0)
    project_in_mm = e * h if cfg.embedding_projection else 0
    final_norm = _norm(cfg, h) if cfg.final_norm else 0
    layer, layer_mm = _layer(cfg, extra)

    if shape.skeleton == "encoder":
        blocks, steps = encoder_blocks(cfg)
        pooler = h * h + h if cfg.pooler_activation else 0
        # XLNet's query stream starts from one learned vector (mask_emb).
        embeddings = tokens + _positions(cfg, extra, e) + types + (h if cfg.xlnet is not None else 0)
        encoder = emb_norm + project_in + blocks * layer + final_norm
        total = embeddings + encoder + pooler
        return ParamCount(total, embeddings, encoder, 0, pooler, project_in_mm + steps * layer_mm, 0)

    # The vocabulary projection reads the hidden state, or its projection back to the
    # embedding width (OPT-350m).
    out_width = e if cfg.output_projection else h
    project_out = h * e if cfg.output_projection else 0
    head = (0 if cfg.tie_word_embeddings else v * out_width) + (v if cfg.lm_head_bias else 0)
    logits_mm = v * out_width

    if shape.skeleton == "decoder":
        embeddings = tokens + _positions(cfg, extra, e) + types
        decoder = emb_norm + project_in + cfg.num_layers * layer + final_norm + project_out
        total = embeddings + decoder + head
        mm = project_in_mm + cfg.num_layers * layer_mm + project_out + logits_mm
        return ParamCount(total, embeddings, 0, decoder, head, 0, mm)

    # Encoder-decoder: one token table shared by both stacks and (when tied) the output.
    n_dec = shape.num_decoder_layers
    dec_layer, dec_layer_mm = _layer(cfg, extra, cross_attention=True)
    positions = _positions(cfg, extra, e)
    embeddings = tokens + 2 * positions
    enc_experts, enc_experts_mm, enc_idle = _experts(cfg.encoder_config(), cfg.num_layers)
    dec_cfg = cfg.replace(num_layers=n_dec).decoder_config()
    dec_experts, dec_experts_mm, dec_idle = _experts(dec_cfg, n_dec)
    encoder = emb_norm + cfg.num_layers * layer + final_norm + enc_experts
    decoder = emb_norm + n_dec * dec_layer + final_norm + dec_experts
    total = embeddings + encoder + decoder + head
    mm_encoder = cfg.num_layers * layer_mm + enc_experts_mm
    mm_decoder = n_dec * dec_layer_mm + logits_mm + dec_experts_mm
    return ParamCount(total, embeddings, encoder, decoder, head, mm_encoder, mm_decoder, enc_idle + dec_idle)


def forward_flops(shape: ArchitecturePreset, seq: int) -> tuple[float, float]:
    """(matmul, attention) FLOPs of one token's forward pass at ``seq`` attended positions.

    An encoder-decoder's figure averages an encoder and a decoder token (source as long as target).
    """
    cfg = shape.config
    counts = count_params(shape)
    q_dim = cfg.num_heads * cfg.head_dim
    if shape.skeleton == "encoder":
        _, steps = encoder_blocks(cfg)
        return 2.0 * counts.matmul_encoder, 4.0 * q_dim * seq * steps
    if shape.skeleton == "decoder":
        window = cfg.local_attention_window
        kinds = cfg.attention_layers or ["global"] * cfg.num_layers
        context = [min(seq, window) if k == "local" and window else seq for k in kinds]
        return 2.0 * counts.matmul_decoder, 4.0 * q_dim * sum(context)
    n_dec = shape.num_decoder_layers
    matmul = (counts.matmul_encoder + counts.matmul_decoder) * 2.0 / 2
    # Each decoder layer attends to itself and, across, to the source.
    attention = (4.0 * q_dim * seq * cfg.num_layers + 8.0 * q_dim * seq * n_dec) / 2
    return matmul, attention
