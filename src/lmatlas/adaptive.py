"""Adaptive input embeddings (Baevski & Auli, 2019) and the adaptive softmax (Grave et al., 2017),
as Transformer-XL reads and predicts its large word vocabularies with them.

The vocabulary, sorted by frequency, is cut at ``cfg.adaptive_cutoffs`` into clusters: the
frequent words first, then rarer and rarer ones. With ``adaptive_div`` d > 1, cluster i is
embedded at a width of embedding_size / d^i and projected up to the model's width, so that rare
words cost few parameters; with d = 1 there is one table, projected only when its width differs
from the model's. Inputs are scaled by sqrt(hidden_size).

The softmax mirrors it. A *head* softmax covers the first cluster's words plus one entry per
other cluster (the probability of being in that cluster); a word of cluster i > 0 gets
log p(cluster i) + log p(word | cluster i), the second from a small softmax over its cluster
alone. The output tables are the input tables (tied) unless the checkpoint unties them; the
projections back to each cluster's width are tied cluster by cluster (``tie_projections``), the
head cluster's never when the input has one table, as transformers ties them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import embedding, random_parameter
from .config import ModelConfig
from .errors import LmatlasError

IGNORE = -100  # a label without a loss, as in transformers and PyTorch
# transformers' initialisation of the projections (proj_init_std) and of the cluster logits (init_std).
PROJECTION_STD = 0.01
CLUSTER_STD = 0.02


def clusters(cfg: ModelConfig) -> list[tuple[int, int]]:
    """The token ids of each cluster, as [start, end) ranges."""
    bounds = [0, *(cfg.adaptive_cutoffs or []), cfg.vocab_size]
    return list(zip(bounds[:-1], bounds[1:]))


def cluster_widths(cfg: ModelConfig) -> list[int]:
    """The embedding width of each cluster (all the same with one table)."""
    n = len(clusters(cfg))
    if cfg.adaptive_div == 1:
        return [cfg.embedding_size] * n
    return [cfg.embedding_size // cfg.adaptive_div**i for i in range(n)]


def _projection(rows: int, cols: int) -> nn.Parameter:
    return random_parameter(rows, cols, std=PROJECTION_STD)


class AdaptiveEmbedding(nn.Module):
    """Token ids -> (..., hidden_size): each cluster's table at its own width, projected up,
    scaled by sqrt(hidden_size). ``tables`` and ``projections`` are indexed by cluster (one table
    for ``adaptive_div`` 1, with a projection only when its width is not the model's)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.bounds = clusters(cfg)
        self.width = cfg.hidden_size
        self.scale = cfg.hidden_size**0.5
        widths = cluster_widths(cfg)
        if cfg.adaptive_div == 1:
            self.tables = nn.ModuleList([embedding(cfg.vocab_size, widths[0])])
            projected = widths[0] != cfg.hidden_size
        else:
            self.tables = nn.ModuleList(embedding(end - start, w) for (start, end), w in zip(self.bounds, widths))
            projected = True
        self.projections = nn.ParameterList(
            _projection(cfg.hidden_size, t.embedding_dim) for t in self.tables if projected
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vocab = self.bounds[-1][1]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise LmatlasError(f"input_ids holds a token id outside the vocabulary (0..{vocab - 1})")
        if len(self.tables) == 1:
            x = self.tables[0](ids)
            if len(self.projections):
                x = F.linear(x, self.projections[0])
            return x * self.scale
        x = torch.zeros(*ids.shape, self.width, dtype=self.tables[0].weight.dtype, device=ids.device)
        for (start, end), table, projection in zip(self.bounds, self.tables, self.projections):
            rows = (ids >= start) & (ids < end)
            if bool(rows.any()):
                x[rows] = F.linear(table(ids[rows] - start), projection).to(x.dtype)  # (autocast's)
        return x * self.scale


class AdaptiveLMHead(nn.Module):
    """The adaptive softmax as Transformer-XL's language-model head (transformers'
    ``ProjectedAdaptiveLogSoftmax``).

    Without labels: ``prediction_scores``, the log-probabilities of every token (also given as
    ``logits``: a softmax leaves them as they are, so decoding reads them as logits). With
    ``labels`` (batch, t), shifted inside as transformers does (position i predicts label i + 1):
    ``losses``, each position's negative log-likelihood (batch, t - 1), 0 where the label is
    -100, and ``loss``, the mean of the non-zero ones. The losses are in the order of the
    positions: transformers' default groups them by cluster (its ``keep_order`` off).
    """

    takes_labels = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.bounds = clusters(cfg)
        self.shortlist = self.bounds[0][1]
        widths = cluster_widths(cfg)
        n = len(self.bounds)
        self.one_table = cfg.adaptive_div == 1
        if n > 1:  # the head's logits of the tail clusters
            self.cluster_weight = random_parameter(n - 1, cfg.embedding_size, std=CLUSTER_STD)
            self.cluster_bias = nn.Parameter(torch.zeros(n - 1))
        if self.one_table:
            self.outputs = nn.ModuleList([nn.Linear(widths[0], cfg.vocab_size)])
        else:
            self.outputs = nn.ModuleList(nn.Linear(w, end - start) for (start, end), w in zip(self.bounds, widths))
        projected = not self.one_table or widths[0] != cfg.hidden_size
        self.projections = nn.ParameterDict(
            {str(i): _projection(cfg.hidden_size, w) for i, w in enumerate(widths)} if projected else {}
        )
        ties = list(cfg.tie_projections or [])
        if len(ties) > n:
            raise LmatlasError(f"tie_projs names {len(ties)} clusters, but the cutoffs make {n}")
        self.tie_projections = ties + [False] * (n - len(ties))
        self.tie_tables = cfg.tie_word_embeddings
        eos = cfg.eos_token_id
        self.eos = eos[0] if isinstance(eos, list) and eos else eos

    def tie(self, embeddings: AdaptiveEmbedding) -> None:
        """Share the input's tables and (per cluster, as configured) its projections."""
        if self.tie_tables:
            for out, table in zip(self.outputs, embeddings.tables):
                out.weight = table.weight
        for i, tied in enumerate(self.tie_projections):
            if tied and str(i) in self.projections:
                self.projections[str(i)] = embeddings.projections[0 if self.one_table else i]

    def _cluster_logits(self, hidden: torch.Tensor, i: int) -> torch.Tensor:
        """Cluster i's logits (the head's: its words and one per tail cluster)."""
        if self.one_table:
            start, end = self.bounds[i]
            weight, bias = self.outputs[0].weight[start:end], self.outputs[0].bias[start:end]
        else:
            weight, bias = self.outputs[i].weight, self.outputs[i].bias
        if i == 0 and len(self.bounds) > 1:
            weight = torch.cat([weight, self.cluster_weight])
            bias = torch.cat([bias, self.cluster_bias])
        projection = self.projections[str(i)] if str(i) in self.projections else None
        if projection is not None:
            hidden = hidden @ projection
        return F.linear(hidden, weight, bias)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """(n, hidden_size) -> (n, vocab) log-probabilities."""
        head = F.log_softmax(self._cluster_logits(hidden, 0), dim=-1)
        if len(self.bounds) == 1:
            return head
        parts = [head[:, : self.shortlist]]
        for i in range(1, len(self.bounds)):
            tail = F.log_softmax(self._cluster_logits(hidden, i), dim=-1)
            parts.append(head[:, self.shortlist + i - 1, None] + tail)
        return torch.cat(parts, dim=-1)

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(n, hidden_size), (n,) -> (n,) negative log-likelihoods in float32 (0 for IGNORE): only
        the clusters that hold a target are computed, for the rows whose target they hold."""
        out = torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device)
        head = F.log_softmax(self._cluster_logits(hidden, 0), dim=-1)
        for i, (start, end) in enumerate(self.bounds):
            rows = (targets >= start) & (targets < end)
            if not bool(rows.any()):
                continue
            wanted = (targets[rows] - start)[:, None]
            if i == 0:
                logp = head[rows].gather(1, wanted).squeeze(1)
            else:
                tail = F.log_softmax(self._cluster_logits(hidden[rows], i), dim=-1)
                logp = head[rows, self.shortlist + i - 1] + tail.gather(1, wanted).squeeze(1)
            out[rows] = -logp.float()
        return out

    def forward(self, out: dict[str, torch.Tensor], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        h = out["last_hidden_state"]
        b, t, width = h.shape
        if labels is None:
            scores = self.log_probs(h.reshape(-1, width)).view(b, t, -1)
            return {"prediction_scores": scores, "logits": scores}
        if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (b, t):
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise LmatlasError(f"labels must be token ids of the input's shape {(b, t)}, not {shape}")
        if t < 2:
            raise LmatlasError("labels need at least two positions: each position predicts the next label")
        vocab = self.bounds[-1][1]
        real = labels[labels != IGNORE]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= vocab):
            raise LmatlasError(f"labels hold a token id outside the vocabulary (0..{vocab - 1}) that is not -100")
        if bool((labels[0, 1:] == IGNORE).all()) and self.eos is not None:
            # As transformers: a first row with nothing to predict gets an end-of-sequence label,
            # so that the mean loss is not taken over nothing.
            labels = labels.clone()
            labels[0, 1] = self.eos
        losses = self.nll(h[:, :-1].reshape(-1, width), labels[:, 1:].reshape(-1)).view(b, t - 1)
        return {"losses": losses, "loss": losses[losses != 0].mean()}


__all__ = ["AdaptiveEmbedding", "AdaptiveLMHead", "cluster_widths", "clusters"]
