"""Adaptive input embeddings and projected adaptive softmax (Baevski & Auli; Grave et al.), as Transformer-XL uses them.

With no cutoffs these are a plain embedding scaled by sqrt(d_model) and a tied
output layer with a bias. torch's AdaptiveLogSoftmaxWithLoss is not used: it has
no output biases on the tail clusters and cannot share weights with the input
embedding, both of which Transformer-XL's published models rely on.

Cluster i holds tokens [cutoff_ends[i], cutoff_ends[i+1]); its embedding width is
d_embed // div_val**i, projected to d_model. The head scores the first cluster's
tokens and one entry per tail cluster, tail cluster i at head column -i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from txl.config import ModelConfig


def cluster_dims(cfg: ModelConfig) -> list[tuple[int, int, int]]:
    """(first token, end token, embedding width) of each cluster."""
    ends = [0, *cfg.cutoffs, cfg.vocab_size]
    if cfg.div_val == 1:
        return [(a, b, cfg.embed_dim) for a, b in zip(ends, ends[1:])]
    return [(a, b, cfg.embed_dim // cfg.div_val**i) for i, (a, b) in enumerate(zip(ends, ends[1:]))]


class AdaptiveEmbedding(nn.Module):
    """Token ids -> (.., d_model) vectors, scaled by sqrt(d_model)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.d_model = cfg.d_model
        self.scale = cfg.d_model**0.5
        self.clusters = cluster_dims(cfg)
        self.emb_layers = nn.ModuleList()
        self.emb_projs = nn.ParameterList()
        if cfg.div_val == 1:
            self.emb_layers.append(nn.Embedding(cfg.vocab_size, cfg.embed_dim))
            if cfg.d_model != cfg.embed_dim:
                self.emb_projs.append(nn.Parameter(torch.zeros(cfg.d_model, cfg.embed_dim)))
        else:
            for a, b, d in self.clusters:
                self.emb_layers.append(nn.Embedding(b - a, d))
                self.emb_projs.append(nn.Parameter(torch.zeros(cfg.d_model, d)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if len(self.emb_layers) == 1:
            out = self.emb_layers[0](tokens)
            if len(self.emb_projs):
                out = F.linear(out, self.emb_projs[0])
            return out * self.scale
        flat = tokens.reshape(-1)
        out = None
        for (a, b, _), emb, proj in zip(self.clusters, self.emb_layers, self.emb_projs):
            idx = ((flat >= a) & (flat < b)).nonzero().squeeze(1)
            vec = F.linear(emb(flat[idx] - a), proj)
            if out is None:
                out = vec.new_zeros(flat.numel(), self.d_model)
            out = out.index_copy(0, idx, vec)
        return out.view(*tokens.shape, self.d_model) * self.scale


class AdaptiveSoftmax(nn.Module):
    """Hidden states -> log-probabilities over the vocabulary, or the loss of given targets."""

    def __init__(self, cfg: ModelConfig, embedding: AdaptiveEmbedding):
        super().__init__()
        self.clusters = cluster_dims(cfg)
        self.n_clusters = len(cfg.cutoffs)
        d_embed, d_model = cfg.embed_dim, cfg.d_model
        if self.n_clusters:
            self.cluster_weight = nn.Parameter(torch.zeros(self.n_clusters, d_embed))
            self.cluster_bias = nn.Parameter(torch.zeros(self.n_clusters))
        self.out_layers = nn.ModuleList()
        self.out_projs = nn.ParameterDict()  # keyed by cluster index; absent where no projection is needed
        tie_projs = cfg.resolved_tie_projs()
        if cfg.div_val == 1:
            self.out_layers.append(nn.Linear(d_embed, cfg.vocab_size))
            if d_model != d_embed:
                for i in range(self.n_clusters + 1):
                    self.out_projs[str(i)] = (
                        embedding.emb_projs[0] if tie_projs[i] else nn.Parameter(torch.zeros(d_model, d_embed))
                    )
        else:
            for i, (a, b, d) in enumerate(self.clusters):
                self.out_layers.append(nn.Linear(d, b - a))
                self.out_projs[str(i)] = (
                    embedding.emb_projs[i] if tie_projs[i] else nn.Parameter(torch.zeros(d_model, d))
                )
        if cfg.tie_weight:
            for out, emb in zip(self.out_layers, embedding.emb_layers):
                out.weight = emb.weight

    def _cluster(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Weight, bias and projection that score cluster i's tokens (the head adds the cluster rows)."""
        if len(self.out_layers) == 1:
            a, b, _ = self.clusters[i]
            weight, bias = self.out_layers[0].weight[a:b], self.out_layers[0].bias[a:b]
        else:
            weight, bias = self.out_layers[i].weight, self.out_layers[i].bias
        if i == 0 and self.n_clusters:
            weight = torch.cat([weight, self.cluster_weight], dim=0)
            bias = torch.cat([bias, self.cluster_bias], dim=0)
        return weight, bias, self.out_projs[str(i)] if str(i) in self.out_projs else None

    @staticmethod
    def _logits(
        hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, proj: torch.Tensor | None
    ) -> torch.Tensor:
        if proj is not None:
            hidden = F.linear(hidden, proj.t())
        # at least float32 for the log-softmax: fp16 logits of large vocabularies overflow
        logits = F.linear(hidden, weight, bias)
        return logits.to(torch.promote_types(logits.dtype, torch.float32))

    def log_prob(self, hidden: torch.Tensor) -> torch.Tensor:
        """(.., d_model) -> (.., vocab) log-probabilities."""
        head = self._logits(hidden, *self._cluster(0)).log_softmax(-1)
        if not self.n_clusters:
            return head
        parts = [head[..., : self.clusters[0][1]]]
        for i in range(1, self.n_clusters + 1):
            tail = self._logits(hidden, *self._cluster(i)).log_softmax(-1)
            parts.append(head[..., -i, None] + tail)
        return torch.cat(parts, dim=-1)

    def nll(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each target token, shaped like `target`, in float32."""
        shape = target.shape
        hidden = hidden.reshape(-1, hidden.size(-1))
        target = target.reshape(-1)
        head = self._logits(hidden, *self._cluster(0)).log_softmax(-1)
        if not self.n_clusters:
            return -head.gather(1, target[:, None]).view(shape)
        nll = torch.zeros_like(target, dtype=head.dtype)
        for i, (a, b, _) in enumerate(self.clusters):
            idx = ((target >= a) & (target < b)).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            if i == 0:
                logp = head[idx].gather(1, target[idx, None]).squeeze(1)
            else:
                tail = self._logits(hidden[idx], *self._cluster(i)).log_softmax(-1)
                logp = head[idx, -i] + tail.gather(1, (target[idx] - a)[:, None]).squeeze(1)
            nll = nll.index_copy(0, idx, -logp)
        return nll.view(shape)
