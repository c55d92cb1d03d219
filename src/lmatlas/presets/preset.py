"""``Preset``: everything lmatlas knows about one family of checkpoints, in one typed value."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from ..config import ModelConfig

if TYPE_CHECKING:
    from ._maps import WeightMap

Skeleton = Literal["encoder", "decoder", "encoder-decoder"]

# The class-name suffix of each lmatlas head in transformers, after the family's prefix.
CLASS_SUFFIX = {
    "base": "Model",
    "encoder": "EncoderModel",
    "masked-lm": "ForMaskedLM",
    "sequence-classification": "ForSequenceClassification",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
    "replaced-token-detection": "ForPreTraining",
    "causal-lm": "ForCausalLM",
    "seq2seq-lm": "ForConditionalGeneration",
    "image-classification": "ForImageClassification",
    "projection": "ModelWithProjection",
    "multiple-choice": "ForMultipleChoice",
    "question-answering-beam": "ForQuestionAnswering",
}


def _of(value: str | Mapping[str, str] | None, model_type: str) -> str | None:
    """A field given once for the family, or per model_type."""
    return value if value is None or isinstance(value, str) else value.get(model_type)


@dataclass(frozen=True)
class Preset:
    """One family: how its ``config.json`` and weight names map onto an lmatlas skeleton, and
    what transformers and the tokenizer call it.

    - ``name``: the family (its module in ``lmatlas.presets``);
    - ``model_types``: the ``model_type`` values of ``config.json`` it reads;
    - ``skeleton``: the lmatlas skeleton its models are built on;
    - ``prefix``: the name under which transformers' head classes store the base model's weights;
    - ``heads``: the ``architectures`` class-name suffixes it knows, mapped to lmatlas head names;
    - ``class_prefix``: transformers' class names before the head's suffix ("GPT2"), one for the
      family or one per model_type;
    - ``class_suffixes``: the heads whose class-name suffix is not the usual ``CLASS_SUFFIX``
      (GPT-2's ``LMHeadModel``, Marian's ``MTModel``);
    - ``tokenizer_family``: the tokenizer family a checkpoint of this model_type uses when its
      files name no tokenizer class (None: the files alone decide), for the family or per type;
    - ``config(hf, head) -> ModelConfig``;
    - ``weights(cfg, head) -> (backbone, head)``: two maps from lmatlas parameter names to the
      checkpoint's names — backbone names without ``prefix``, head names as stored. A tuple of
      checkpoint names is concatenated along the first dimension (the fused q/k/v projection); a
      ``_maps.Derived`` rearranges stored tensors (transposed or per-head interleaved layouts);
    - ``to_hf(cfg) -> dict``: config.json fields for ``cfg``, the inverse of ``config``;
    - ``ties(cfg, head, weights, prefix) -> ModelConfig`` or None: the ties that config.json
      leaves to the checkpoint (which tables it stores, and whether their values differ), for
      ``weights`` (a ``checkpoint.Weights``) whose backbone names start with ``prefix``;
    - ``stored_name(model_type, name) -> str`` or None: a stored tensor's name as the weight maps
      know it, where releases of transformers store one class under different names;
    - ``buffers(cfg) -> {name: tensor}`` or None: tensors transformers' class stores beside the
      parameters (backbone names), written when saving so that it finds them; never read.
    """

    name: str
    model_types: tuple[str, ...]
    skeleton: Skeleton
    prefix: str
    heads: Mapping[str, str]
    class_prefix: str | Mapping[str, str]
    tokenizer_family: str | Mapping[str, str] | None
    config: Callable[[dict, str], ModelConfig]
    weights: Callable[[ModelConfig, str], tuple[WeightMap, WeightMap]]
    to_hf: Callable[[ModelConfig], dict]
    ties: Callable[[ModelConfig, str, Any, str], ModelConfig] | None = None
    class_suffixes: Mapping[str, str] = field(default_factory=dict)
    stored_name: Callable[[str, str], str] | None = None
    buffers: Callable[[ModelConfig], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        # Read-only copies: families share the tables they are built from (``_maps.DECODER_HEADS``).
        for name in ("heads", "class_prefix", "tokenizer_family", "class_suffixes"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, MappingProxyType(dict(value)))
        for name in ("class_prefix", "tokenizer_family"):  # given per model_type: for each one
            value = getattr(self, name)
            if isinstance(value, Mapping) and set(value) != set(self.model_types):
                raise ValueError(f"preset {self.name}: {name} names {sorted(value)}, not {sorted(self.model_types)}")

    def head_names(self) -> set[str]:
        """The lmatlas heads a checkpoint of this family can be loaded with."""
        return {"base", *self.heads.values()}

    def class_name(self, model_type: str, head: str) -> str:
        """transformers' class of ``head`` for ``model_type``, as ``config.architectures`` names it."""
        return _of(self.class_prefix, model_type) + self.class_suffixes.get(head, CLASS_SUFFIX[head])

    def tokenizer_family_of(self, model_type: str) -> str | None:
        return _of(self.tokenizer_family, model_type)
