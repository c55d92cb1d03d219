"""Pretraining tasks: each paper's objective bound to a model and its data.

A task draws batches (through a sampler whose state a checkpoint keeps), computes its loss
terms with the functions of ``objectives``, evaluates on held-out data and saves its model(s)
in the Hugging Face format. One module per family of objectives:

- ``causal``: GPT's causal language modelling, Alpaca's instruction tuning;
- ``segments``: Transformer-XL's, over consecutive segments with a memory carried between them;
- ``masked``: BERT's and RoBERTa's masked language modelling, ELECTRA's replaced token detection;
- ``distillation``: DistilBERT's student and teacher;
- ``seq2seq``: T5's span corruption and BART's denoising;
- ``permutation``: XLNet's permutation language modelling.
"""

from .base import ModelTask, load_weights
from .causal import CausalLMTask, InstructionTask, instruction_examples, pad_examples
from .distillation import DistillationTask
from .masked import ElectraPair, ElectraTask, MaskedLMTask, electra_generator_config
from .permutation import PermutationLMTask
from .segments import SegmentLMTask, SegmentSampler
from .seq2seq import DenoisingTask

__all__ = [
    "CausalLMTask",
    "DenoisingTask",
    "DistillationTask",
    "ElectraPair",
    "ElectraTask",
    "InstructionTask",
    "MaskedLMTask",
    "ModelTask",
    "PermutationLMTask",
    "SegmentLMTask",
    "SegmentSampler",
    "electra_generator_config",
    "instruction_examples",
    "load_weights",
    "pad_examples",
]
