"""The decoder skeleton: GPT and its descendants (GPT-2, CTRL, GPT-Neo, OPT, BLOOM, Falcon, Llama).

The same blocks as the encoder, with a causal mask and a key/value cache: a forward pass over new
tokens reads the keys and values of the earlier ones from the cache instead of recomputing them.
Decoding strategies (greedy, sampling, beams) live in the generation engine, not here.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import padding_mask
from .blocks import Layer, embedding, make_norm
from .cache import KVCache
from .config import ModelConfig
from .embedding_layer import Embeddings
from .errors import LmatlasError
from .positions import (
    alibi_slopes,
    relative_position_bias,
    rotary_cos_sin,
    rotary_inv_freq,
)


class Decoder(nn.Module):
    """Embeddings, then causal layers (optionally local or with ALiBi), then a final norm.

    ``forward`` takes the new tokens; with a cache, ``attention_mask`` covers the cached tokens
    and the new ones (as in transformers), and positions continue from the cache's length.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg, i) for i in range(cfg.num_layers))
        self.kinds = list(cfg.attention_layers or ["global"] * cfg.num_layers)
        self.window = cfg.local_attention_window
        self.final_norm = make_norm(cfg, cfg.hidden_size, cfg.final_norm_eps) if cfg.final_norm else None
        self.project_out = nn.Linear(cfg.hidden_size, cfg.embedding_size, bias=False) if cfg.output_projection else None
        self.rotary = cfg.position_embedding == "rotary"
        self.alibi = cfg.position_embedding == "alibi"
        # T5: per-head biases by (causal) relative-position bucket, shared by every layer.
        self.relative_attention_bias = (
            embedding(cfg.relative_attention_num_buckets, cfg.num_heads)
            if cfg.position_embedding == "relative"
            else None
        )
        # Computed on first use rather than stored: nothing of the kind is in a checkpoint.
        self._inv_freq: torch.Tensor | None = None
        self._slopes: torch.Tensor | None = None

    def new_cache(self, batch_size: int, max_length: int) -> KVCache:
        p = next(self.parameters())
        return KVCache(self.config, batch_size, max_length, dtype=p.dtype, device=p.device)

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's cross-attention keys and values of the encoder's output ``memory``."""
        return [layer.cross_attn.memory_kv(memory) for layer in self.layers]

    def default_position_ids(
        self, attention_mask: torch.Tensor | None, batch: int, start: int, t: int, device
    ) -> torch.Tensor:
        if self.config.positions_from_mask and attention_mask is not None:
            # OPT: padding does not advance the position (padding itself sits at -1).
            mask = attention_mask.long()
            return (torch.cumsum(mask, dim=1) * mask - 1)[:, start:]
        return torch.arange(start, start + t, device=device)[None, :].expand(batch, t)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        memory: torch.Tensor | list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        memory_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``memory`` (decoders with cross-attention): the encoder's output, or its keys and
        values per layer (``cross_kv``); ``memory_mask`` marks its real tokens.
        ``inputs_embeds`` (batch, t, hidden) stand in for the embedded ``input_ids``."""
        b, t = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
        device = (input_ids if inputs_embeds is None else inputs_embeds).device
        start = cache.length if cache is not None else 0
        total = start + t
        if position_ids is None:
            position_ids = self.default_position_ids(attention_mask, b, start, t, device)
        x = self.embeddings(input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)
        padded = attention_mask is not None and not bool(attention_mask[:, :total].all())
        key_mask = attention_mask[:, :total].bool() if padded else None
        rope = None
        if self.rotary:
            if self._inv_freq is None:
                self._inv_freq = rotary_inv_freq(self.config)
            rope = rotary_cos_sin(self._inv_freq, position_ids, self.config.rotary_interleaved, x.dtype)
        masks = self._masks(key_mask, attention_mask, b, t, start, x.dtype, x.device)
        cross_mask = None
        if self.config.cross_attention:
            if memory is None:
                raise LmatlasError("this decoder attends to an encoder's output: pass memory")
            if isinstance(memory, torch.Tensor):
                memory = self.cross_kv(memory)
            cross_mask = padding_mask(memory_mask)
        hidden_states = [x] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            mask, is_causal = masks[self.kinds[i]]
            view = cache.layer(i) if cache is not None else None
            if memory is None:
                x = layer(x, mask, rope, view, is_causal)
            else:
                x = layer(x, mask, rope, view, is_causal, memory[i], cross_mask)
            if hidden_states is not None:
                hidden_states.append(x)
        if cache is not None:
            cache.length = total
        if self.final_norm is not None:
            x = self.final_norm(x)
            if hidden_states is not None:
                hidden_states[-1] = x
        if self.project_out is not None:
            x = self.project_out(x)
        out = {"last_hidden_state": x}
        if hidden_states is not None:
            out["hidden_states"] = tuple(hidden_states)
        return out

    def _masks(self, key_mask, attention_mask, b: int, t: int, start: int, dtype, device):
        """Per attention kind, (mask for SDPA or None, is_causal): built once per forward.

        Without padding, ALiBi or a window, a prefill uses SDPA's own causal mask and a one-token
        step needs none, which lets SDPA take its fastest path.
        """
        total = start + t
        out = {}
        for kind in set(self.kinds):
            window = self.window if kind == "local" else None
            windowed = window is not None and total > window
            if self.relative_attention_bias is not None:
                bias = relative_position_bias(
                    self.relative_attention_bias, start, t, total, False, self.config.relative_attention_max_distance
                ).to(dtype)
                allowed = self._allowed(key_mask, b, t, start, window, device)
                out[kind] = (bias.masked_fill(~allowed, torch.finfo(dtype).min), False)
                continue
            if key_mask is None and not windowed and not self.alibi:
                out[kind] = (None, t > 1 and start == 0)
                if t > 1 and start > 0:
                    out[kind] = (self._allowed(None, b, t, start, None, device), False)
                continue
            allowed = self._allowed(key_mask, b, t, start, window, device)
            if self.alibi:
                out[kind] = (self._alibi_bias(attention_mask, allowed, b, total, dtype, device), False)
            else:
                out[kind] = (allowed, False)
        return out

    @staticmethod
    def _allowed(key_mask, b: int, t: int, start: int, window: int | None, device) -> torch.Tensor:
        """Boolean (batch or 1, 1, t, keys): causal, within the window, and not padding."""
        q = torch.arange(start, start + t, device=device)[:, None]
        k = torch.arange(start + t, device=device)[None, :]
        allowed = k <= q
        if window is not None:
            allowed = allowed & (k > q - window)
        allowed = allowed[None, None]
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :]
        return allowed

    def _alibi_bias(self, attention_mask, allowed, b: int, total: int, dtype, device) -> torch.Tensor:
        """ALiBi: each head adds slope x the key's position (counted over real tokens, as BLOOM
        does); a per-query constant is dropped because softmax ignores it."""
        if self._slopes is None:
            self._slopes = alibi_slopes(self.config.num_heads)
        slopes = self._slopes.to(device)
        if attention_mask is None:
            key_pos = torch.arange(total, device=device, dtype=torch.float32)[None, :].expand(b, total)
        else:
            mask = attention_mask[:, :total].long()
            key_pos = ((mask.cumsum(-1) - 1) * mask).float()
        bias = slopes[None, :, None, None] * key_pos[:, None, None, :]
        if self.config.alibi_before_scale:  # Falcon: (q.k + alibi) / sqrt(d)
            bias = bias * (self.config.head_dim**-0.5)
        bias = bias.to(dtype)
        return bias.masked_fill(~allowed, torch.finfo(dtype).min)
