"""CLIP (Radford et al., 2021): a text tower and an image tower (both pre-norm encoders, quick
GELU), each projected into one space; zero-shot classification compares an image with label
sentences there. The towers also load alone (``CLIPTextModel``, ``CLIPVisionModel``), with their
projection (``...WithProjection``)."""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import LmatlasError
from ._maps import WeightMap, fused, hf_common, linear, norm
from .preset import Preset
from .vit import vision_common


def text_config(hf: dict) -> ModelConfig:
    """The text tower: learned positions, causal attention, pooled at the end-of-text token."""
    return ModelConfig(
        model_type=hf.get("model_type", "clip_text_model"),
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        activation=hf.get("hidden_act", "quick_gelu"),
        max_positions=hf.get("max_position_embeddings", 77),
        norm_eps=hf.get("layer_norm_eps", 1e-5),
        norm_position="pre",
        embedding_norm=False,
        final_norm=True,
        type_vocab_size=0,
        causal_encoder=True,
        pooling="eos",
        projection_dim=hf.get("projection_dim"),
        hidden_dropout=0.0,
        attention_dropout=hf.get("attention_dropout", 0.0),
        **hf_common(hf),
    )


def vision_config(hf: dict) -> ModelConfig:
    """The image tower: ViT's patches with a bias-free convolution, normalised before the layers
    (``pre_layrnorm``); the class token, normalised, is the pooled output."""
    common = vision_common(hf) | dict(
        model_type=hf.get("model_type", "clip_vision_model"), embedding_norm=True,
        activation=hf.get("hidden_act", "quick_gelu"),
    )  # fmt: skip
    return ModelConfig(
        **common,
        patch_bias=False,
        final_norm=True,
        pooling="class-norm",
        norm_eps=hf.get("layer_norm_eps", 1e-5),
        projection_dim=hf.get("projection_dim"),
        hidden_dropout=0.0,
        attention_dropout=hf.get("attention_dropout", 0.0),
        **hf_common(hf),
    )


def config(hf: dict, head: str) -> ModelConfig:
    if hf["model_type"] == "clip_text_model":
        return text_config(hf)
    if hf["model_type"] == "clip_vision_model":
        return vision_config(hf)
    if head == "projection":
        raise LmatlasError("CLIPModel projects both towers already; the projection head is for one tower's checkpoint")
    text = text_config(dict(hf.get("text_config") or {}, model_type="clip_text_model"))
    vision = vision_config(dict(hf.get("vision_config") or {}, model_type="clip_vision_model"))
    return text.replace(
        model_type="clip", vision=vision, projection_dim=hf.get("projection_dim", 512), hf_config=hf,
        architectures=list(hf.get("architectures") or []),
    )  # fmt: skip


def _layers(ours: str, theirs: str, n: int) -> WeightMap:
    m: WeightMap = {}
    for i in range(n):
        o, t = f"{ours}.layers.{i}", f"{theirs}.encoder.layers.{i}"
        att = f"{t}.self_attn"
        m |= fused(f"{o}.attn.qkv", (f"{att}.q_proj", f"{att}.k_proj", f"{att}.v_proj"))
        m |= linear(f"{o}.attn.out", f"{att}.out_proj")
        m |= norm(f"{o}.attn_norm", f"{t}.layer_norm1")
        m |= linear(f"{o}.mlp.fc_in", f"{t}.mlp.fc1")
        m |= linear(f"{o}.mlp.fc_out", f"{t}.mlp.fc2")
        m |= norm(f"{o}.mlp_norm", f"{t}.layer_norm2")
    return m


def text_weights(cfg: ModelConfig, ours: str) -> WeightMap:
    m: WeightMap = {
        f"{ours}.embeddings.tokens.weight": "text_model.embeddings.token_embedding.weight",
        f"{ours}.embeddings.positions.weight": "text_model.embeddings.position_embedding.weight",
    }
    return m | _layers(ours, "text_model", cfg.num_layers) | norm(f"{ours}.final_norm", "text_model.final_layer_norm")


def vision_weights(cfg: ModelConfig, ours: str) -> WeightMap:
    m: WeightMap = {
        f"{ours}.embeddings.class_token": "vision_model.embeddings.class_embedding",
        f"{ours}.embeddings.patches.weight": "vision_model.embeddings.patch_embedding.weight",
        f"{ours}.embeddings.positions": "vision_model.embeddings.position_embedding.weight",
    }
    m |= norm(f"{ours}.embeddings.norm", "vision_model.pre_layrnorm")
    return m | _layers(ours, "vision_model", cfg.num_layers) | norm(f"{ours}.final_norm", "vision_model.post_layernorm")


def weights(cfg: ModelConfig, head: str) -> tuple[WeightMap, WeightMap]:
    if cfg.vision is not None:
        backbone = text_weights(cfg, "backbone.text") | vision_weights(cfg.vision, "backbone.vision") | {
            "backbone.text_projection.weight": "text_projection.weight",
            "backbone.visual_projection.weight": "visual_projection.weight",
            "backbone.logit_scale": "logit_scale",
        }
        return backbone, {}
    if cfg.image_size:
        backbone, projection = vision_weights(cfg, "backbone"), "visual_projection.weight"
    else:
        backbone, projection = text_weights(cfg, "backbone"), "text_projection.weight"
    return backbone, ({"head.out.weight": projection} if head == "projection" else {})


def _tower_hf(cfg: ModelConfig) -> dict:
    from ._inverse import plain_heads

    plain_heads(cfg, "CLIP")
    out = dict(
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, hidden_act=cfg.activation, layer_norm_eps=cfg.norm_eps,
        attention_dropout=cfg.attention_dropout, projection_dim=cfg.projection_dim,
    )  # fmt: skip
    if cfg.image_size:
        if cfg.image_size[0] != cfg.image_size[1] or cfg.patch_size[0] != cfg.patch_size[1]:
            raise LmatlasError("a CLIP config.json holds square images and patches only")
        return dict(out, model_type="clip_vision_model", image_size=cfg.image_size[0], patch_size=cfg.patch_size[0],
                    num_channels=cfg.num_channels)  # fmt: skip
    return dict(
        out, model_type="clip_text_model", vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_positions,
        pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
    )  # fmt: skip


def to_hf(cfg: ModelConfig) -> dict:
    """config.json fields for ``cfg`` (the inverse of ``config``): one tower's, or CLIPModel's
    text_config and vision_config."""
    if cfg.vision is None:
        return _tower_hf(cfg)
    return dict(
        model_type="clip",
        text_config=_tower_hf(cfg.replace(vision=None)),
        vision_config=_tower_hf(cfg.vision),
        projection_dim=cfg.projection_dim,
    )


# A tower saved alone: transformers 4 stores it under its tower's name, transformers 5 without.
_TOWER = {"clip_text_model": "text_model.", "clip_vision_model": "vision_model."}


def stored_name(model_type: str, name: str) -> str:
    tower = _TOWER.get(model_type)
    if tower is None or name.startswith((tower, "text_projection.", "visual_projection.")):
        return name  # (a tower with its projection is stored under its name in both)
    return tower + name


PRESET = Preset(
    name="clip",
    model_types=("clip", "clip_text_model", "clip_vision_model"),
    skeleton="encoder",
    # Every CLIP class stores its towers under text_model. and vision_model.: the maps name them.
    prefix="",
    heads={"ModelWithProjection": "projection", "Model": "base"},
    class_prefix={"clip": "CLIP", "clip_text_model": "CLIPText", "clip_vision_model": "CLIPVision"},
    tokenizer_family={"clip": None, "clip_text_model": None, "clip_vision_model": None},
    config=config,
    weights=weights,
    to_hf=to_hf,
    stored_name=stored_name,
)
