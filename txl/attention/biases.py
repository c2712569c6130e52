"""Relative position biases added to content attention: ALiBi (linear) and T5 (log buckets).

These are the linear-type and log-type relative encodings of Wang & E (NeurIPS 2024):
ALiBi subtracts slope_h * distance (Press et al. 2022); T5 adds a learned scalar per
head for each logarithmic distance bucket (Raffel et al. 2020). Neither uses the
Transformer-XL position term or its biases u, v.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from txl.attention.base import Attention
from txl.config import ConfigError, LayerConfig, ModelConfig
from txl.config.domains import AT_LEAST_1, Domain, positive
from txl.config.model import variant_settings


@variant_settings("t5", {"num_buckets": Domain(2), "max_distance": AT_LEAST_1}, omit_default=False)
@dataclass
class T5Config:
    """model.t5: the distance buckets of every t5 layer (Raffel et al.; the log-type encoding of Wang & E)."""

    num_buckets: int = 32
    max_distance: int = 128

    def validate(self, model: ModelConfig) -> T5Config:
        positive(self, "model.t5", ["num_buckets", "max_distance"])
        if self.num_buckets < 2 or self.max_distance <= self.num_buckets // 2:
            raise ConfigError(
                f"model.t5.max_distance ({self.max_distance}) must exceed half of model.t5.num_buckets "
                f"({self.num_buckets}), and num_buckets must be >= 2"
            )
        return self


def alibi_slopes(n_head: int) -> list[float]:
    """Geometric slopes 2^(-8/n), 2^(-16/n), ...; other head counts interleave the next power of two's."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        return power_of_two(n_head)
    base = 2 ** math.floor(math.log2(n_head))
    return power_of_two(base) + power_of_two(2 * base)[0::2][: n_head - base]


def t5_buckets(distance: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Causal T5 buckets: exact below num_buckets/2, logarithmic up to max_distance, then the last bucket."""
    exact = num_buckets // 2
    d = distance.clamp(min=0)
    log_ratio = torch.log(d.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return torch.where(d < exact, d, large)


class ALiBiAttention(Attention):
    name = "alibi"
    description = "content attention minus slope_h * distance (ALiBi, linear-type relative encoding)"
    fast_impls = frozenset({"sdpa", "flex"})

    def __init__(self, cfg: ModelConfig, layer: LayerConfig):
        super().__init__(cfg, layer)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(cfg.n_head)), persistent=False)

    def score_bias(self, q, klen, ctx):
        d = ctx.masks.distances(q.size(2), klen).clamp(min=0)
        return -(self.slopes[:, None, None] * d).to(q.dtype)

    def flex_score_mod(self, q, klen, ctx):
        slopes, mlen = self.slopes, klen - q.size(2)

        def score_mod(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * (mlen + q_idx - kv_idx)

        return score_mod


class T5Attention(Attention):
    name = "t5"
    description = "content attention plus a learned bias per head and log-spaced distance bucket (T5, log-type)"
    fast_impls = frozenset({"sdpa", "flex"})

    def __init__(self, cfg: ModelConfig, layer: LayerConfig):
        super().__init__(cfg, layer)
        self.num_buckets, self.bucket_limit = cfg.t5.num_buckets, cfg.t5.max_distance
        self.rel_bias = nn.Parameter(torch.zeros(cfg.t5.num_buckets, cfg.n_head))

    @classmethod
    def param_count(cls, cfg: ModelConfig, layer: LayerConfig) -> int:
        return super().param_count(cfg, layer) + cfg.t5.num_buckets * cfg.n_head

    def init_txl(self, cfg: ModelConfig) -> None:
        nn.init.normal_(self.rel_bias, 0.0, cfg.init_std)

    def score_bias(self, q, klen, ctx):
        buckets = t5_buckets(ctx.masks.distances(q.size(2), klen), self.num_buckets, self.bucket_limit)
        return self.rel_bias[buckets].permute(2, 0, 1).to(q.dtype)  # (H, Q, K)

    def flex_score_mod(self, q, klen, ctx):
        table, mlen, nb, limit = self.rel_bias, klen - q.size(2), self.num_buckets, self.bucket_limit

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + table[t5_buckets(mlen + q_idx - kv_idx, nb, limit), h]

        return score_mod
