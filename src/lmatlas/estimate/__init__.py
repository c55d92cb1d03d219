"""The numbers to know before running anything: parameters, FLOPs, memory, KV cache, speed.

Everything here is arithmetic on a model's shape — an architecture preset, a catalogue entry, or
a checkpoint folder's ``config.json`` read by its family's preset — except the exact parameter
count of a folder, read from its weight files' headers. The memory bandwidth that bounds
decoding is an input; ``bandwidth.measure_bandwidth`` times this machine for the command.

- ``counting``: parameters and forward FLOPs of a shape;
- ``folder`` (and ``generic``, for families without a preset): a checkpoint folder;
- ``target``: a folder, catalogue name or preset name resolved into a count and a shape;
- ``result``: the ``Estimate`` and ``estimate()``; ``report``: its text.
"""

from __future__ import annotations

from .bandwidth import measure_bandwidth, parse_bandwidth
from .counting import ParamCount, count_params, encoder_blocks, forward_flops, shape_of
from .folder import folder_params, folder_shape, stored_params
from .report import format_bytes, format_estimate, format_flops
from .result import CHINCHILLA_SLOPE, DTYPE_BYTES, Estimate, chinchilla_tokens, estimate, parse_dtype

__all__ = [
    "CHINCHILLA_SLOPE",
    "DTYPE_BYTES",
    "Estimate",
    "ParamCount",
    "chinchilla_tokens",
    "count_params",
    "encoder_blocks",
    "estimate",
    "folder_params",
    "folder_shape",
    "format_bytes",
    "format_estimate",
    "format_flops",
    "forward_flops",
    "measure_bandwidth",
    "parse_bandwidth",
    "parse_dtype",
    "shape_of",
    "stored_params",
]
