"""Training: each landmark paper's objective, fine-tuning, one trainer, and torch.distributed.

From Python, a typed recipe and ``train``::

    from lmatlas.training import MaskedLMRecipe, TrainConfig, train

    train(MaskedLMRecipe(model="bert-base", data=["wiki.txt"], tokenizer="wordpiece", vocab_size=8000,
                         num_layers=4, hidden_size=256, num_heads=4),
          TrainConfig(out="runs/bert", steps=2000, lr=5e-4))

- ``recipes`` / ``finetune_recipes``: what to train, one dataclass per objective or task, and ``train``
  (``permutation``: XLNet's recipe);
- ``objectives``: the noising, masking and losses of GPT, BERT/RoBERTa, ELECTRA, DistilBERT,
  T5, BART, Alpaca and XLNet, as small functions over token ids (Transformer-XL's segments and
  memory: ``tasks.segments``);
- ``models`` / ``init``: a model to train (a preset at any size, or a checkpoint) and its
  paper's initialisation;
- ``alignment`` / ``alignment_recipes`` / ``pairs``: learning from preferences (a reward model,
  DPO, GRPO, RLOO, PPO): the losses, the recipes and the preference data;
- ``tasks`` / ``finetune``: an objective or a fine-tuning task bound to a model and data;
- ``trainer`` (with ``config``, ``checkpoints``, ``progress``, ``plots``): one training loop
  for all of them, with exact resume;
- ``data``: token streams, labelled files and the samplers that shard them across processes;
- ``distributed``: the same training under ``torchrun``;
- ``tokenizer_trainer``: char, BPE, byte-level BPE, WordPiece and unigram tokenizers.
"""

from .alignment_recipes import (PREFERENCE_RECIPES, DPORecipe, GRPORecipe, OnlineRecipe, PPORecipe, RewardRecipe,
                                RLOORecipe)
from .config import TrainConfig
from .fields import FieldError
from .finetune_recipes import FINETUNE_RECIPES, ClassifyRecipe, Finetuning, NERRecipe, QARecipe, Seq2SeqRecipe
from .recipes import (
    RECIPES,
    CausalLMRecipe,
    DenoisingRecipe,
    DistillationRecipe,
    ElectraRecipe,
    InstructionRecipe,
    MaskedLMRecipe,
    Pretraining,
    SegmentLMRecipe,
    SpanCorruptionRecipe,
    train,
)
from .permutation import PermutationLMRecipe

RECIPES[PermutationLMRecipe.objective] = PermutationLMRecipe  # XLNet's, in its own module

__all__ = [
    "FINETUNE_RECIPES",
    "PREFERENCE_RECIPES",
    "RECIPES",
    "CausalLMRecipe",
    "ClassifyRecipe",
    "DPORecipe",
    "DenoisingRecipe",
    "DistillationRecipe",
    "ElectraRecipe",
    "FieldError",
    "GRPORecipe",
    "Finetuning",
    "InstructionRecipe",
    "MaskedLMRecipe",
    "NERRecipe",
    "OnlineRecipe",
    "PPORecipe",
    "PermutationLMRecipe",
    "Pretraining",
    "QARecipe",
    "RLOORecipe",
    "RewardRecipe",
    "SegmentLMRecipe",
    "Seq2SeqRecipe",
    "SpanCorruptionRecipe",
    "TrainConfig",
    "train",
]
