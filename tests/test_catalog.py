"""The catalogue of models and the architecture presets: complete, faithful to the notes and the
papers, queryable from the command line, and drawn as a picture."""

from __future__ import annotations

import hashlib
import json
import re
import sys

import pytest

from lmatlas import catalog
from lmatlas.catalog import architecture, architecture_names, architecture_preset, find, lookup, models, search
from lmatlas.cli import main
from lmatlas.errors import LmatlasError
from lmatlas.estimate import count_params

from . import reference
from .paths import DATA, data_file

NOTES = DATA / "notes" / "llm-notes.md"

# Every model the notes name, as the notes write it: the year table (with its year), the size
# table, the by-name list and the architecture table. The notes themselves (their four tables, in
# tests/data/notes) are parsed too, and must agree.
NOTES_YEARS = {
    "Transformer": 2017, "GPT": 2018, "BERT": 2018, "GPT-2": 2019, "DistilBERT - Distilled BERT": 2019,
    "BART": 2019, "T5": 2019, "ALBERT": 2019, "RoBERTa - A Robustly Optimized BERT Pretraining Approach": 2019,
    "CTRL": 2019, "Transformer XL": 2019, "GPT-3": 2020, "ELECTRA": 2020, "mBART": 2020, "Gopher": 2021,
    "chatGPT": 2022, "InstructGPT": 2022, "Chinchilla": 2022,
    "LaMDA - Language Models for Dialog Applications": 2022, "GPT-4": 2023, "BloombergGPT": 2023,
}
NOTES_BY_NAME = [
    "ALBERT", "Alpaca", "BART", "BERT", "Big Bird", "BLOOM", "Chinchilla", "CLIP", "CTRL", "chatGPT", "DALL-E",
    "DALL-E-2", "Decision Transformers", "DialoGPT", "DistilBERT", "DQ-BART", "ELECTRA", "ERNIE", "Flamingo",
    "Falcon40B", "Gato", "Gopher", "GLaM", "GLIDE", "GC-ViT", "GPT", "GPT-2", "GPT-3", "GPT-4", "GPT-Neo",
    "GPTInstruct", "Imagen", "InstructGPT", "Jurassic-1", "LaMDA", "mBART", "Megatron", "Minerva", "MT-NLG", "OPT",
    "Palm", "Pegasus", "RoBERTa", "SeeKer", "Swin Transformer", "Switch", "Transformer", "T5",
    "Trajectory Transformers", "Transformer XL", "Turing-NLG", "ViT", "Wu Dao 2.0", "XLM-RoBERTa", "XLNet",
]
NOTES_ARCHITECTURES = {
    "encoder": ["ALBERT", "BERT", "DistilBERT", "ELECTRA", "RoBERTa"],
    "decoder": ["CTRL", "GPT", "GPT-2", "Transformer XL"],
    "encoder-decoder": ["BART", "T5", "Marian", "mBART"],
}
# The size table: (parameters, training tokens or None).
NOTES_SIZES = {
    "Gopher": (280e9, 300e9),
    "GPT-3": (175e9, None),
    "LaMDA": (137e9, 168e9),
    "Chinchilla": (70e9, 1.4e12),
    "BloombergGPT": (50e9, 363e9 + 345e9),
    "Falcon40B": (40e9, 1e12),
}


def _size(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    return sum(catalog.parse_quantity(part) for part in text.split("+"))


def _parse_notes() -> dict:
    """The notes' four lists of models, read from the Markdown."""
    text = NOTES.read_text(encoding="utf-8")
    sections = re.split(r"\n## ", text)

    def section(title: str) -> str:
        return next(s for s in sections if s.startswith(title))

    link = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")
    years = {}
    for line in section("Known LLM models classified by year").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1].isdigit():
            for name in cells[2].split("/"):
                years[name.strip()] = (int(cells[1]), link.search(cells[3]).group(2))
    sizes = {}
    for line in section("Known LLM models classified by size").splitlines():
        cells = [c.strip() for c in line.split("|")]
        m = link.search(cells[1]) if len(cells) > 3 else None
        if m:
            sizes[m.group(1)] = (_size(cells[2]), _size(cells[3]), m.group(2))
    by_name = {}
    for line in section("Known LLM models classified by name").splitlines():
        if line.startswith("- "):
            for item in line[2:].split("|"):
                item = item.strip()
                if not item:
                    continue
                m = link.search(item)
                by_name[m.group(1) if m else item] = m.group(2) if m else None
    arch = {}
    for line in section("Classification by architecture").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and "," in cells[2]:
            kind = "encoder-decoder" if cells[1].startswith("Encoder-Decoder") else cells[1].split("-")[0].lower()
            arch[kind] = [n.strip() for n in cells[2].split(",")]
    return {"years": years, "sizes": sizes, "by_name": by_name, "arch": arch}


@pytest.fixture(scope="module")
def notes():
    if not NOTES.exists():
        pytest.fail(f"the notes {NOTES} are missing; they are part of the project under tests/data/notes")
    return _parse_notes()


# --------------------------------------------------------------------------------------------
# The catalogue holds every model of the notes, as the notes give it
# --------------------------------------------------------------------------------------------


def _all_note_names() -> set[str]:
    names = set(NOTES_YEARS) | set(NOTES_BY_NAME) | set(NOTES_SIZES)
    for group in NOTES_ARCHITECTURES.values():
        names |= set(group)
    return names


@pytest.mark.parametrize("name", sorted(_all_note_names()))
def test_every_name_in_the_notes_is_catalogued(name):
    model = lookup(name)
    assert model is not None, f"{name} is not in the catalogue"
    assert 2017 <= model.year <= 2023
    assert model.paper.title and model.paper.url.startswith("https://")


def test_years_match_the_year_table():
    for name, year in NOTES_YEARS.items():
        assert find(name).year == year, name


def test_architectures_match_the_architecture_table():
    for kind, names in NOTES_ARCHITECTURES.items():
        for name in names:
            assert find(name).architecture == kind, name


def test_sizes_match_the_size_table():
    for name, (params, tokens) in NOTES_SIZES.items():
        model = find(name)
        assert model.params == params, name
        if tokens is not None:  # where the notes say nothing, the paper's figure may stand
            assert model.training_tokens == tokens, name
    assert find("GPT-3").training_tokens == 300e9  # from the paper
    assert "1.56T words" in find("LaMDA").training_data
    assert "RefinedWeb" in find("Falcon40B").training_data


def test_the_notes_themselves_agree(notes):
    """Parse the notes: the embedded lists above are complete, and every link and figure agrees."""
    assert set(notes["years"]) == set(NOTES_YEARS)
    assert set(notes["by_name"]) == set(NOTES_BY_NAME)
    assert set(notes["sizes"]) == set(NOTES_SIZES)
    assert notes["arch"] == NOTES_ARCHITECTURES
    for name, (year, url) in notes["years"].items():
        model = find(name)
        assert model.year == year, name
        assert url in (model.paper.url, model.homepage), name
    for name, url in notes["by_name"].items():
        model = find(name)
        if url:
            assert url in (model.paper.url, model.homepage), name
    for name, (params, tokens, url) in notes["sizes"].items():
        model = find(name)
        assert model.params == params and tokens in (None, model.training_tokens), name
        assert url in (model.paper.url, model.homepage), name


def _shingle(words: list[str]) -> str:
    return hashlib.sha256(" ".join(words).encode()).hexdigest()[:16]


def test_summaries_are_our_own_words():
    """No run of six words from the notes appears in a summary. The project keeps the notes'
    prose only as hashes of its six-word runs (tests/data/notes/shingles.txt, made from the whole
    notes with ``_shingle``), not as text."""
    shingles = set(data_file("notes", "shingles.txt").read_text(encoding="utf-8").split())
    assert len(shingles) > 1000
    for m in models():
        ours = re.findall(r"[a-z0-9]+", m.summary.lower())
        copied = [" ".join(ours[i : i + 6]) for i in range(len(ours) - 5) if _shingle(ours[i : i + 6]) in shingles]
        assert not copied, (m.name, copied)


# --------------------------------------------------------------------------------------------
# Every entry is well formed
# --------------------------------------------------------------------------------------------


def test_entries_are_complete_and_consistent():
    entries = models()
    assert 50 <= len(entries) <= 70
    assert [m.year for m in entries] == sorted(m.year for m in entries)
    assert {m.architecture for m in entries} == set(catalog.ARCHITECTURES)
    assert any(m.modality != "text" for m in entries)
    for m in entries:
        assert m.weights in ("open", "closed"), m.name
        assert m.organisation, m.name
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", m.summary.strip()) if s]
        assert 1 <= len(sentences) <= 2 and len(m.summary) < 400, m.name
        if m.architecture == "other":
            assert m.architecture_note, m.name
        for figure in (m.params, m.training_tokens):
            assert figure is None or (isinstance(figure, int) and figure > 0), m.name
        if m.lmatlas:
            assert m.lmatlas.preset or m.lmatlas.architectures, m.name
            for ckpt in m.lmatlas.checkpoints:
                assert re.fullmatch(r"[\w.\-]+/[\w.\-]+", ckpt), (m.name, ckpt)
            if m.lmatlas.checkpoints:
                assert m.lmatlas.preset, m.name
            for name in m.lmatlas.architectures:
                assert name in architecture_names(), (m.name, name)


def test_lmatlas_presets_are_config_json_model_types():
    """Each runtime preset named is a real ``model_type`` of config.json."""
    config_mapping = reference.transformers().CONFIG_MAPPING
    for m in models():
        if m.lmatlas and m.lmatlas.preset:
            assert m.lmatlas.preset in config_mapping, (m.name, m.lmatlas.preset)


def test_names_are_unambiguous():
    keys = {}
    for m in models():
        for n in m.names:
            key = catalog.normalise(n)
            assert keys.setdefault(key, m.name) == m.name, n


def test_lookup_ignores_case_spaces_and_hyphens():
    assert find("gpt3").name == "GPT-3"
    assert find("falcon 40b").name == "Falcon-40B"
    assert find("TRANSFORMER-XL").name == "Transformer-XL"
    assert find("dall·e 2").name == "DALL-E 2"


def test_unknown_name_suggests_close_ones():
    with pytest.raises(LmatlasError, match="did you mean Chinchilla"):
        find("Chinchila")


def test_headline_preset_has_the_catalogue_size():
    """The first architecture of an entry is its headline model (within 12%: papers round)."""
    for m in models():
        if m.params and m.lmatlas and m.lmatlas.architectures:
            n = count_params(architecture_preset(m.lmatlas.architectures[0])).total
            assert abs(n / m.params - 1) < 0.12, (m.name, n, m.params)


def test_json_of_an_entry_has_plain_numbers():
    d = find("Chinchilla").to_dict()
    assert d["params"] == 70_000_000_000 and d["training_tokens"] == 1_400_000_000_000
    assert d["paper"]["url"] == "https://arxiv.org/abs/2203.15556"
    assert json.loads(json.dumps(d)) == d


# --------------------------------------------------------------------------------------------
# Searching
# --------------------------------------------------------------------------------------------


def test_search_filters_and_sorts():
    big_open = search(arch="decoder", min_params="100B", open_only=True, sort="params", reverse=True)
    assert [m.name for m in big_open] == ["BLOOM", "OPT"]
    assert {m.year for m in search(year="2019-2020")} == {2019, 2020}
    assert all(m.year >= 2022 for m in search(year="2022-"))
    assert all(m.params <= 1e9 for m in search(max_params="1B"))
    by_size = search(sort="params")
    sized = [m.params for m in by_size if m.params]
    assert sized == sorted(sized) and by_size[-1].params is None
    assert search(arch="Encoder-only") == search(arch="encoder")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"arch": "transformer"}, "--arch must be one of"),
        ({"year": "nineteen"}, "--year must be a year"),
        ({"year": "2023-2019"}, "is empty"),
        ({"min_params": "lots"}, "--min-params must be a number"),
        ({"sort": "size"}, "--sort must be one of"),
    ],
)
def test_search_rejects_bad_filters(kwargs, message):
    with pytest.raises(LmatlasError, match=message):
        search(**kwargs)


# --------------------------------------------------------------------------------------------
# Architecture presets
# --------------------------------------------------------------------------------------------

# Published parameter counts of the closed giants, and the papers' tables the presets follow.
GIANTS = {
    "gpt3-175b": 175e9,  # Brown et al. 2020, Table 2.1
    "gopher-280b": 280e9,  # Rae et al. 2021, Table 1
    "chinchilla-70b": 70e9,  # Hoffmann et al. 2022, Table 4
    "lamda-137b": 137e9,  # Thoppilan et al. 2022, Table 27
    "bloomberggpt-50b": 50.6e9,  # Wu et al. 2023, section 3
}


@pytest.mark.parametrize("name", sorted(GIANTS))
def test_giants_reproduce_their_published_counts(name):
    n = count_params(architecture_preset(name)).total
    assert abs(n / GIANTS[name] - 1) < 0.03, (name, n)


def test_falcon_40b_counts_its_released_weights():
    """Falcon-40B's preset holds exactly the parameters of the released model, which transformers
    builds from the released config.json (on the meta device: no memory). The model card's
    rounded "40B" is 3.3% below that exact count; the notes' figure stays in the catalogue."""
    tf = reference.transformers()
    import torch

    hf = tf.FalconConfig(
        vocab_size=65024, hidden_size=8192, num_hidden_layers=60, num_attention_heads=128, num_kv_heads=8,
        new_decoder_architecture=True, parallel_attn=True, bias=False, alibi=False,
    )
    with torch.device("meta"):
        expected = tf.FalconForCausalLM(hf).num_parameters()
    preset = architecture_preset("falcon-40b")
    assert count_params(preset).total == expected == preset.checkpoint_params
    assert abs(expected / 40e9 - 1) < 0.035
    assert find("Falcon-40B").params == 40e9


def _hf_twin(tf, name: str):
    """The transformers model of the same shape as one of our presets."""
    a = architecture_preset(name)
    c = a.config
    common = dict(vocab_size=c.vocab_size)
    if c.model_type in ("gpt2", "gpt3", "megatron"):
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=c.hidden_size, n_layer=c.num_layers, n_head=c.num_heads,
                                                n_positions=c.max_positions, n_inner=c.intermediate_size, **common))
    if c.model_type == "openai-gpt":
        return tf.OpenAIGPTLMHeadModel(tf.OpenAIGPTConfig(n_embd=c.hidden_size, n_layer=c.num_layers,
                                                          n_head=c.num_heads, n_positions=c.max_positions, **common))
    if c.model_type == "bloom":
        return tf.BloomForCausalLM(tf.BloomConfig(hidden_size=c.hidden_size, n_layer=c.num_layers, n_head=c.num_heads, **common))
    if c.model_type == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
                                                  num_attention_heads=c.num_heads, intermediate_size=c.intermediate_size, **common))
    if c.model_type == "falcon":
        return tf.FalconForCausalLM(tf.FalconConfig(
            hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
            num_kv_heads=c.num_kv_heads, new_decoder_architecture=c.parallel_norms == 2,
            multi_query=c.num_kv_heads == 1, parallel_attn=True, bias=False, alibi=False, **common))
    if c.model_type == "gpt_neo":
        return tf.GPTNeoForCausalLM(tf.GPTNeoConfig(hidden_size=c.hidden_size, num_layers=c.num_layers,
                                                    num_heads=c.num_heads, max_position_embeddings=c.max_positions,
                                                    attention_types=[[["global", "local"], c.num_layers // 2]], **common))
    if c.model_type == "opt":
        return tf.OPTForCausalLM(tf.OPTConfig(hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
                                              num_attention_heads=c.num_heads, ffn_dim=c.intermediate_size,
                                              max_position_embeddings=c.max_positions - 2, word_embed_proj_dim=c.hidden_size, **common))
    if c.model_type == "ctrl":
        return tf.CTRLLMHeadModel(tf.CTRLConfig(n_embd=c.hidden_size, n_layer=c.num_layers, n_head=c.num_heads, dff=c.intermediate_size, **common))
    if c.model_type in ("bert", "roberta", "xlm-roberta", "electra", "albert", "distilbert", "ernie", "big_bird"):
        kw = dict(hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                  intermediate_size=c.intermediate_size, max_position_embeddings=c.max_positions, **common)
        if c.model_type == "bert":
            return tf.BertModel(tf.BertConfig(**kw))
        if c.model_type == "big_bird":
            return tf.BigBirdModel(tf.BigBirdConfig(**kw))
        if c.model_type == "ernie":
            return tf.ErnieModel(tf.ErnieConfig(type_vocab_size=c.type_vocab_size, use_task_id=True,
                                                task_type_vocab_size=c.task_type_vocab_size, **kw))
        if c.model_type == "roberta":
            return tf.RobertaModel(tf.RobertaConfig(type_vocab_size=1, **kw))
        if c.model_type == "xlm-roberta":
            return tf.XLMRobertaModel(tf.XLMRobertaConfig(type_vocab_size=1, **kw))
        if c.model_type == "electra":
            return tf.ElectraModel(tf.ElectraConfig(embedding_size=c.embedding_size, **kw))
        if c.model_type == "albert":
            return tf.AlbertModel(tf.AlbertConfig(embedding_size=c.embedding_size, **kw))
        return tf.DistilBertModel(tf.DistilBertConfig(dim=c.hidden_size, n_layers=c.num_layers, n_heads=c.num_heads,
                                                      hidden_dim=c.intermediate_size, **common))
    if c.model_type == "switch_transformers":
        return tf.SwitchTransformersForConditionalGeneration(tf.SwitchTransformersConfig(
            d_model=c.hidden_size, num_layers=c.num_layers, num_heads=c.num_heads, d_kv=c.head_dim, d_ff=c.intermediate_size,
            num_experts=c.num_experts, num_sparse_encoder_layers=c.num_layers // c.sparse_step,
            num_sparse_decoder_layers=c.num_layers // c.decoder_sparse_step, **common))
    if c.model_type == "t5":
        return tf.T5ForConditionalGeneration(tf.T5Config(d_model=c.hidden_size, num_layers=c.num_layers, num_heads=c.num_heads,
                                                         d_kv=c.head_dim, d_ff=c.intermediate_size, **common))
    if c.model_type in ("bart", "mbart"):
        cls, cfg_cls = (tf.BartForConditionalGeneration, tf.BartConfig) if c.model_type == "bart" else (
            tf.MBartForConditionalGeneration, tf.MBartConfig)
        return cls(cfg_cls(d_model=c.hidden_size, encoder_layers=c.num_layers, decoder_layers=a.extra["num_decoder_layers"],
                           encoder_attention_heads=c.num_heads, decoder_attention_heads=c.num_heads,
                           encoder_ffn_dim=c.intermediate_size, decoder_ffn_dim=c.intermediate_size,
                           max_position_embeddings=c.max_positions - 2, **common))
    if c.model_type == "bigbird_pegasus":
        return tf.BigBirdPegasusForConditionalGeneration(tf.BigBirdPegasusConfig(
            d_model=c.hidden_size, encoder_layers=c.num_layers, decoder_layers=a.extra["num_decoder_layers"],
            encoder_attention_heads=c.num_heads, decoder_attention_heads=c.num_heads, encoder_ffn_dim=c.intermediate_size,
            decoder_ffn_dim=c.intermediate_size, max_position_embeddings=c.max_positions, **common))
    if c.model_type == "pegasus":
        return tf.PegasusForConditionalGeneration(tf.PegasusConfig(
            d_model=c.hidden_size, encoder_layers=c.num_layers, decoder_layers=a.extra["num_decoder_layers"],
            encoder_attention_heads=c.num_heads, decoder_attention_heads=c.num_heads, encoder_ffn_dim=c.intermediate_size,
            decoder_ffn_dim=c.intermediate_size, max_position_embeddings=c.max_positions, **common))
    if c.model_type == "transfo-xl":
        return tf.TransfoXLLMHeadModel(tf.TransfoXLConfig(
            d_model=c.hidden_size, d_embed=c.embedding_size, n_head=c.num_heads, d_head=c.head_dim,
            d_inner=c.intermediate_size, n_layer=c.num_layers, cutoffs=c.adaptive_cutoffs, div_val=c.adaptive_div,
            proj_share_all_but_first=c.tie_projections[1], **common))
    raise AssertionError(f"no transformers twin for {name}")


EXACT = [
    "gpt", "gpt2", "gpt2-xl", "gpt3-175b", "megatron-8.3b", "ctrl", "gpt-neo-125m", "gpt-neo-2.7b", "opt-125m",
    "bloom-560m", "bloomberggpt-50b", "llama-7b", "llama-65b", "falcon-7b", "bert-base", "bert-large",
    "distilbert-base", "roberta-large", "xlm-roberta-base", "albert-base", "electra-large", "ernie-3.0-base",
    "bigbird-roberta-base", "bigbird-pegasus-large", "t5-small", "t5-3b", "switch-base-8",
    "bart-large", "mbart-large", "pegasus-large", "transfo-xl-wt103", "transfo-xl-lm1b",
]


@pytest.mark.parametrize("name", EXACT)
def test_preset_count_equals_transformers_exactly(name):
    """Our arithmetic against transformers' own model of the same shape, at full size (built on
    the meta device, so no memory is used)."""
    tf = reference.transformers()
    import torch

    with torch.device("meta"):
        model = _hf_twin(tf, name)
    assert count_params(architecture_preset(name)).total == model.num_parameters()


def test_published_counts_are_near():
    """Every preset is within 12% of the count its paper or model card gives: catches typos."""
    for name in architecture_names():
        a = architecture_preset(name)
        n = count_params(a).total
        assert a.published_params and abs(n / a.published_params - 1) < 0.12, (name, n)
        assert a.source and a.model and lookup(a.model) is not None, name


def test_reduced_size_keeps_the_design():
    small = architecture("gpt3-175b", num_layers=2, hidden_size=256, num_heads=4)
    assert (small.num_layers, small.hidden_size, small.num_heads, small.head_dim) == (2, 256, 4, 64)
    assert small.intermediate_size == 1024  # the 4x MLP stays 4x
    assert small.norm_position == "pre" and small.causal and small.position_embedding == "learned"
    falcon = architecture("falcon-40b", hidden_size=512, num_heads=16, num_layers=2)
    assert falcon.num_kv_heads == 1 and falcon.parallel_norms == 2 and falcon.position_embedding == "rotary"
    lamda = architecture("lamda-137b", hidden_size=256, num_heads=8, num_layers=2)
    assert lamda.head_dim == 32 and lamda.gated_mlp and lamda.norm == "rmsnorm"
    neo = architecture("gpt-neo-125m", num_layers=3)
    assert neo.attention_layers == ["global", "local", "global"] and neo.local_attention_window == 256
    t5 = architecture_preset("t5-3b", num_layers=2, hidden_size=128, num_heads=4)
    assert t5.config.head_dim == 32 and t5.extra["num_decoder_layers"] == 2
    albert = architecture("albert-xxlarge", hidden_size=256, num_heads=4, num_layers=2)
    assert albert.embedding_size == 128 and albert.embedding_projection
    assert architecture("ctrl", hidden_size=64, num_heads=4).embedding_scale == 8.0  # sqrt(d) of the new width


@pytest.mark.parametrize("name", ["bert-large", "albert-xxlarge", "electra-large", "distilbert-base", "roberta-large"])
def test_reduced_preset_builds_an_lmatlas_model(name):
    """A preset at a trainable size builds lmatlas' own encoder, with the parameters we count."""
    from lmatlas.model import LmatlasModel

    small = architecture_preset(name, num_layers=2, hidden_size=64, num_heads=4, vocab_size=500)
    model = LmatlasModel(small.config)
    assert model.num_parameters() == count_params(small).total
    out = model(torch_ids := __import__("torch").randint(0, 500, (2, 7)))
    assert out.last_hidden_state.shape == (*torch_ids.shape, 64)


def test_reduced_count_equals_transformers():
    tf = reference.transformers()
    a = architecture_preset("falcon-40b", hidden_size=256, num_heads=16, num_layers=3, vocab_size=1000)
    hf = tf.FalconConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=3, num_attention_heads=16,
                         num_kv_heads=a.config.num_kv_heads, new_decoder_architecture=True, parallel_attn=True,
                         bias=False, alibi=False)
    assert count_params(a).total == tf.FalconForCausalLM(hf).num_parameters()


def test_architecture_errors():
    with pytest.raises(LmatlasError, match="did you mean gpt3-175b"):
        architecture("gpt3-157b")
    with pytest.raises(LmatlasError, match="unknown architecture field 'num_layer'"):
        architecture("gpt2", num_layer=2)
    with pytest.raises(LmatlasError, match="not a multiple of num_heads"):
        architecture("gpt2", hidden_size=100, num_heads=3)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_cli_list(capsys):
    assert main(["catalog"]) == 0
    out = capsys.readouterr().out
    assert "Chinchilla" in out and "1.4T" in out and f"{len(models())} models" in out


def test_cli_filters_and_json(capsys):
    assert main(["catalog", "--arch", "decoder", "--year", "2022", "--min-params", "100B", "--open", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"OPT", "BLOOM"}
    fields = {"name", "aliases", "year", "organisation", "paper", "architecture", "params", "training_tokens",
              "training_data", "summary", "weights", "lmatlas"}
    assert all(fields <= set(r) for r in rows)
    assert all(isinstance(r["params"], int) for r in rows)


def test_cli_sort(capsys):
    assert main(["catalog", "--sort", "params", "--reverse", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "Wu Dao 2.0" and rows[-1]["params"] is None


def test_cli_show(capsys):
    assert main(["catalog", "show", "chinchilla"]) == 0
    out = capsys.readouterr().out
    assert "Training Compute-Optimal Large Language Models" in out and "chinchilla-70b" in out
    assert main(["catalog", "show", "Wu", "Dao", "2.0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 1_750_000_000_000
    assert main(["catalog", "gpt-2"]) == 0  # `show` may be left out
    assert "openai-community/gpt2-xl" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["catalog", "show", "Chinchila"], "no model called 'Chinchila' in the catalogue; did you mean Chinchilla"),
        (["catalog", "show"], "needs a model name"),
        (["catalog", "--arch", "rnn"], "--arch must be one of"),
        (["catalog", "--year", "20x9"], "--year must be a year"),
        (["catalog", "--min-params", "big"], "--min-params must be a number"),
        (["catalog", "--sort", "size"], "--sort must be one of"),
        (["catalog", "--plot", "atlas.gif"], "must end in .png"),
        (["catalog", "--plot", "no/such/dir/atlas.png"], "no such folder"),
        (["catalog", "--year", "2017", "--arch", "encoder", "--plot", "x.png"], "none of the chosen models"),
    ],
)
def test_cli_user_errors(args, message, capsys):
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("lmatlas: error: ") and message in err and err.count("\n") == 1


def test_cli_plot(tmp_path, capsys):
    reference.require("matplotlib")
    out = tmp_path / "atlas.png"
    assert main(["catalog", "--plot", str(out)]) == 0
    assert "models (" in capsys.readouterr().out
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > height > 800
    # A filtered plot, with JSON on standard output and the message on standard error.
    assert main(["catalog", "--arch", "encoder", "--plot", str(tmp_path / "enc.svg"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) and "wrote" in captured.err
    assert (tmp_path / "enc.svg").read_text().lstrip().startswith("<?xml")


def test_cli_plot_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    assert main(["catalog", "--plot", str(tmp_path / "a.png")]) == 1
    assert "needs matplotlib: pip install matplotlib" in capsys.readouterr().err


def test_the_real_command_and_its_imports():
    """As a command: a user error exits 1 with one line; listing imports neither matplotlib nor
    transformers."""
    import subprocess

    p = subprocess.run([sys.executable, "-m", "lmatlas", "catalog", "show", "Gopherr"], capture_output=True, text=True)
    assert p.returncode == 1 and "did you mean Gopher" in p.stderr
    code = (
        "import sys; from lmatlas.cli import main; main(['catalog', '--json']); main(['estimate', 'gpt2', '--bandwidth', '9']); "
        "print([m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'transformers')], file=sys.stderr)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stderr.strip() == "[]"
