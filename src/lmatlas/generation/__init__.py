"""Decoding: greedy, sampling and beam search over any model with a key/value cache.

One engine for every decoder and encoder-decoder: the model only runs forward passes over new
tokens with a cache; everything else is here, one idea a module:

- ``settings``: ``GenerationSettings`` and the one rule of precedence between the global
  defaults, a pipeline's, the model's generation_config.json and the call's arguments;
- ``language``: an encoder-decoder's target language as ``generate()`` arguments;
- ``processors``: the logits processors, in transformers' order;
- ``stopping``: end-of-sequence tokens and stop strings;
- ``run``: one call's setup (prompt, settings, the encoded source, the cache) and the forward
  pass each step makes;
- ``sampling`` (greedy and multinomial) and ``beam_search``: the decoding loops;
- ``engine``: ``generate()`` and ``stream()``.

An encoder-decoder's source is encoded once; its cache (``encoder_decoder.Seq2SeqCache``) holds
the cross-attention keys and values once per source, shared by that source's beams, and the loops
run on the decoder's tokens exactly as they do on a decoder's prompt (which for an
encoder-decoder is the decoder start token). Argument names and semantics follow transformers'
``generate()`` (4.57), so that the same call gives the same tokens:

- a finished row (EOS or stop string) continues with ``pad_token_id``; generation ends when every
  row has finished or the length limit is reached;
- left-padded prompts take their positions from the attention mask (cumsum - 1).

The cache is allocated once per call for prompt + new tokens; beam search reorders it in place.
"""

from .engine import generate, stream
from .language import language_code, target_language
from .processors import no_repeat_ngram, repetition_penalty, top_k_filter, top_p_filter
from .settings import GenerationSettings, resolve

__all__ = [
    "GenerationSettings",
    "generate",
    "language_code",
    "no_repeat_ngram",
    "repetition_penalty",
    "resolve",
    "stream",
    "target_language",
    "top_k_filter",
    "top_p_filter",
]
