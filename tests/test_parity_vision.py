"""Vision presets (ViT, CLIP) against transformers, on checkpoints it writes with random weights.

Unusual shapes on purpose: non-square images whose sides are not multiples of the patch (the
convolution drops the remainder), 3 heads of width 16, right-padded texts of several lengths.
"""

from __future__ import annotations

import pytest
import torch

import lmatlas

from .reference import randomize, save_reference, transformers

TOL = 1e-4
TEXT_VOCAB = 99
EOS = 97

VIT = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=70,
           image_size=[30, 45], patch_size=7, hidden_act="gelu")  # fmt: skip
CLIP_TEXT = dict(vocab_size=TEXT_VOCAB, hidden_size=40, intermediate_size=70, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=20, pad_token_id=1, bos_token_id=0,
                 eos_token_id=EOS, projection_dim=24)  # fmt: skip
CLIP_VISION = dict(hidden_size=48, intermediate_size=60, num_hidden_layers=2, num_attention_heads=3,
                   image_size=30, patch_size=7, projection_dim=24)  # fmt: skip


def pixels(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def texts(eos: int = EOS) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows, right-padded: each ends in its end-of-text token, then padding."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 90, (3, 13), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate((13, 8, 3)):
        ids[row, length - 1] = eos
        ids[row, length:] = 1
        mask[row, length:] = 0
    return ids, mask


def build(cls: str, config, seed: int = 0, **kw):
    torch.manual_seed(0)
    model = getattr(transformers(), cls)(config, **kw).eval()
    randomize(model, seed=seed)
    return model


def worst(expected, got, fields) -> float:
    diff = 0.0
    for field in fields:
        e, g = getattr(expected, field), got.get(field)
        assert g is not None, f"lmatlas gives no {field}"
        assert g.shape == e.shape, (field, g.shape, e.shape)
        diff = max(diff, (g - e).abs().max().item())
    return diff


VIT_CASES = {
    "base": ("ViTModel", {}, ["last_hidden_state", "pooler_output"]),
    "base-no-pooler": ("ViTModel", {"add_pooling_layer": False}, ["last_hidden_state"]),
    "image-classification": ("ViTForImageClassification", {}, ["logits"]),
}


@pytest.mark.parametrize("case", VIT_CASES)
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_vit(case, qkv_bias, tmp_path):
    tf = transformers()
    cls, kw, fields = VIT_CASES[case]
    config = tf.ViTConfig(**VIT, qkv_bias=qkv_bias, num_labels=5)
    ref = build(cls, config, seed=len(case), **kw)
    save_reference(ref, tmp_path, True)
    ours = lmatlas.load(tmp_path)
    assert ours.head_name == case.removesuffix("-no-pooler")
    x = pixels(2, 30, 45)
    with torch.no_grad():
        expected, got = ref(pixel_values=x), ours(pixel_values=x)
    if case == "base-no-pooler":
        assert got.pooler_output is None
    assert worst(expected, got, fields) <= TOL


CLIP_CASES = {
    "CLIPModel": ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"],
    "CLIPTextModel": ["last_hidden_state", "pooler_output"],
    "CLIPTextModelWithProjection": ["last_hidden_state", "text_embeds"],
    "CLIPVisionModel": ["last_hidden_state", "pooler_output"],
    "CLIPVisionModelWithProjection": ["last_hidden_state", "image_embeds"],
}


def clip_config(cls: str, eos: int = EOS):
    tf = transformers()
    text = dict(CLIP_TEXT, eos_token_id=eos)
    if cls == "CLIPModel":
        return tf.CLIPConfig(text_config=text, vision_config=CLIP_VISION, projection_dim=24)
    if cls.startswith("CLIPText"):
        return tf.CLIPTextConfig(**text)
    return tf.CLIPVisionConfig(**CLIP_VISION)


@pytest.mark.parametrize("cls", CLIP_CASES)
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_clip(cls, safe, tmp_path):
    ref = build(cls, clip_config(cls), seed=len(cls))
    save_reference(ref, tmp_path, safe)
    ours = lmatlas.load(tmp_path)
    ids, mask = texts()
    inputs = {}
    if not cls.startswith("CLIPVision"):
        inputs |= dict(input_ids=ids, attention_mask=mask)
    if not cls.startswith("CLIPText"):
        inputs["pixel_values"] = pixels(2, 30, 30)
    with torch.no_grad():
        expected, got = ref(**inputs), ours(**inputs)
    assert worst(expected, got, CLIP_CASES[cls]) <= TOL


@pytest.mark.parametrize("cls", ["CLIPTextModel", "CLIPVisionModel"])
def test_clip_tower_stored_without_its_name(cls, tmp_path):
    """transformers 5 saves a tower alone without the tower's name (``embeddings.…``, not
    ``text_model.embeddings.…``); both layouts read as the same model."""
    from safetensors.torch import load_file, save_file

    ref = build(cls, clip_config(cls), seed=3)
    save_reference(ref, tmp_path, True)
    file = tmp_path / "model.safetensors"
    tower = "text_model." if cls.startswith("CLIPText") else "vision_model."
    state = load_file(file)  # (as transformers 5 writes it already: then unchanged)
    save_file({k.removeprefix(tower): v for k, v in state.items()}, file, metadata={"format": "pt"})
    ours = lmatlas.load(tmp_path)
    ids, mask = texts()
    inputs = dict(input_ids=ids, attention_mask=mask) if tower == "text_model." else dict(pixel_values=pixels(2, 30, 30))
    with torch.no_grad():
        expected, got = ref(**inputs), ours(**inputs)
    assert worst(expected, got, CLIP_CASES[cls]) <= TOL


def test_clip_features_and_legacy_end_token(tmp_path):
    """get_text_features / get_image_features; a config with eos 2 pools at the largest id."""
    ref = build("CLIPModel", clip_config("CLIPModel", eos=2), seed=7)
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path)
    ids, mask = texts(eos=TEXT_VOCAB - 1)
    x = pixels(3, 30, 30, seed=2)
    with torch.no_grad():
        text = (ours.backbone.text_features(ids, mask) - ref.get_text_features(input_ids=ids, attention_mask=mask))
        image = ours.backbone.image_features(x) - ref.get_image_features(pixel_values=x)
    assert text.abs().max().item() <= TOL and image.abs().max().item() <= TOL


def test_image_size_and_modality_errors(tmp_path):
    ref = build("ViTModel", transformers().ViTConfig(**VIT))
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path)
    with pytest.raises(lmatlas.LmatlasError, match="reads images of 30x45 pixels, not 30x30"):
        ours(pixel_values=pixels(1, 30, 30))
    with pytest.raises(lmatlas.LmatlasError, match="an image model reads pixel_values"):
        ours(input_ids=torch.tensor([[1, 2]]))


SWIN = dict(embed_dim=16, depths=[2, 3, 2], num_heads=[2, 4, 2], window_size=3, patch_size=2, mlp_ratio=2.5)
# (height, width) of the images: the first needs padding to whole patches and windows, and odd
# sides at the merges; the second is square and exact.
SWIN_IMAGES = [(27, 39), (24, 24)]


@pytest.mark.parametrize("cls", ["SwinModel", "SwinForImageClassification"])
@pytest.mark.parametrize("size", SWIN_IMAGES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_swin(cls, size, tmp_path):
    tf = transformers()
    config = tf.SwinConfig(**SWIN, image_size=list(size), num_labels=5)
    ref = build(cls, config, seed=11)
    save_reference(ref, tmp_path, True)
    ours = lmatlas.load(tmp_path)
    x = pixels(2, *size, seed=4)
    with torch.no_grad():
        expected, got = ref(pixel_values=x), ours(pixel_values=x)
    fields = ["logits"] if cls.endswith("Classification") else ["last_hidden_state", "pooler_output"]
    assert worst(expected, got, fields) <= TOL


def test_swin_image_smaller_than_a_window(tmp_path):
    ref = build("SwinModel", transformers().SwinConfig(**SWIN, image_size=[24, 24]))
    ref.save_pretrained(tmp_path)
    with pytest.raises(lmatlas.LmatlasError, match="too small for Swin's 3x3 windows"):
        lmatlas.load(tmp_path)(pixel_values=pixels(1, 8, 30))


SAVED = {
    "ViTForImageClassification": lambda tf: tf.ViTConfig(**VIT, num_labels=4),
    "SwinForImageClassification": lambda tf: tf.SwinConfig(**SWIN, image_size=[27, 39], num_labels=4),
    "CLIPModel": lambda tf: clip_config("CLIPModel"),
    "CLIPVisionModelWithProjection": lambda tf: clip_config("CLIPVisionModelWithProjection"),
    "CLIPTextModelWithProjection": lambda tf: clip_config("CLIPTextModelWithProjection"),
}


@pytest.mark.parametrize("cls", SAVED)
def test_save_round_trip(cls, tmp_path):
    """lmatlas saves what it loaded as transformers' folder: transformers and lmatlas read it back."""
    from lmatlas.save import save_model

    tf = transformers()
    ref = build(cls, SAVED[cls](tf), seed=13)
    ref.save_pretrained(tmp_path / "ref")
    save_model(lmatlas.load(tmp_path / "ref"), tmp_path / "ours")
    back, again = getattr(tf, cls).from_pretrained(tmp_path / "ours").eval(), lmatlas.load(tmp_path / "ours")
    inputs = {}
    if not cls.startswith(("ViT", "Swin", "CLIPVision")):
        inputs |= dict(zip(("input_ids", "attention_mask"), texts()))
    size = {"ViT": (30, 45), "Swi": (27, 39), "CLI": (30, 30)}[cls[:3]]
    if not cls.startswith("CLIPText"):
        inputs["pixel_values"] = pixels(2, *size)
    field = {"CLIPModel": "logits_per_image", "CLIPVisionModelWithProjection": "image_embeds",
             "CLIPTextModelWithProjection": "text_embeds"}.get(cls, "logits")  # fmt: skip
    with torch.no_grad():
        expected = getattr(ref(**inputs), field)
        assert (getattr(back(**inputs), field) - expected).abs().max().item() <= TOL
        assert (again(**inputs)[field] - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("cls", ["ViTModel", "CLIPTextModel", "CLIPVisionModel"])
def test_hidden_states(cls, tmp_path):
    """Every layer's output, the embeddings first, before any final norm (as transformers counts them)."""
    tf = transformers()
    config = tf.ViTConfig(**VIT) if cls == "ViTModel" else clip_config(cls)
    ref = build(cls, config, seed=17)
    ref.save_pretrained(tmp_path)
    ours = lmatlas.load(tmp_path)
    if cls == "CLIPTextModel":
        inputs = dict(zip(("input_ids", "attention_mask"), texts()))
    else:
        inputs = {"pixel_values": pixels(2, *((30, 45) if cls == "ViTModel" else (30, 30)))}
    with torch.no_grad():
        expected = ref(**inputs, output_hidden_states=True).hidden_states
        got = ours(**inputs, output_hidden_states=True)["hidden_states"]
    assert len(got) == len(expected)
    mask = inputs.get("attention_mask", torch.ones(2, 1)).bool()
    for g, e in zip(got, expected):
        rows = mask[..., None].expand_as(e) if cls == "CLIPTextModel" else torch.ones_like(e, dtype=torch.bool)
        assert (g - e)[rows].abs().max().item() <= TOL
