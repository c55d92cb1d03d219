"""Training: each landmark paper's objective, fine-tuning, one trainer, and torch.distributed.

- ``objectives``: the noising, masking and losses of GPT, BERT/RoBERTa, ELECTRA, DistilBERT,
  T5, BART and Alpaca, as small functions over token ids;
- ``tasks`` / ``finetune``: an objective or a fine-tuning task bound to a model and data;
- ``trainer``: one training loop for all of them, with exact resume;
- ``data``: token streams, labelled files and the samplers that shard them across processes;
- ``distributed``: the same training under ``torchrun``;
- ``tokenizer_trainer``: char, BPE, byte-level BPE, WordPiece and unigram tokenizers.
"""
