"""Locality and smoothness ("LaS", Zimerman & Wolf, ICML 2024) on top of Transformer-XL attention.

    S_c[i, j] = S_c[i, j] * exp(-alpha_c * d)      locality: per-head decay of the logits, d = mlen + i - j
    A_c       = softmax(S_c + mask)
    A_c[i, j] = mean(A_c[i, j : j + P])             smoothness: average pooling over keys

Pooling looks only at keys j..j+P-1, never past the query, then is masked to the
visible keys again and renormalised, so rows stay distributions and the matrix stays
lower-triangular (no future leak, no reach beyond the attention range). No parameters
are added: the decay rates are a fixed schedule (one global head with alpha = 0 by
default, the rest geometric between las.alpha_min and las.alpha_max; neither the
schedule nor the default kernel of 3 is verified against the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from txl.attention.xl import XLAttention
from txl.config import ConfigError, LayerConfig, ModelConfig
from txl.config.domains import AT_LEAST_0, AT_LEAST_1, POSITIVE, positive
from txl.config.model import variant_settings


@variant_settings(
    "las",
    {
        "global_heads": AT_LEAST_0,
        "alpha_min": POSITIVE,
        "alpha_max": POSITIVE,
        "alphas": AT_LEAST_0,
        "kernel": AT_LEAST_1,
    },
    omit_default=False,  # written to JSON always, as before the registry (config hashes unchanged)
)
@dataclass
class LaSConfig:
    """model.las: the decay schedule and pooling width of every LaS layer (the schedule and kernel are not verified
    against the paper)."""

    global_heads: int = 1  # heads with alpha = 0 (fully global)
    alpha_min: float = 1e-3  # the other heads' decay rates run geometrically from alpha_min ...
    alpha_max: float = 1e-1  # ... to alpha_max
    alphas: list[float] | None = None  # explicit per-head rates; overrides the schedule
    kernel: int = 3  # average-pooling width over keys; 1 turns smoothing off

    def validate(self, model: ModelConfig) -> LaSConfig:
        """Checks of the LaS settings against the model's head count."""
        n_head = model.n_head
        positive(self, "model.las", ["kernel"])
        if self.alphas is not None:
            if len(self.alphas) != n_head:
                raise ConfigError(f"model.las.alphas needs {n_head} values (one per head), got {len(self.alphas)}")
            if any(a < 0 for a in self.alphas):
                raise ConfigError(f"model.las.alphas must be >= 0, got {self.alphas}")
        if not 0 <= self.global_heads <= n_head:
            raise ConfigError(f"model.las.global_heads must be in 0..{n_head}, got {self.global_heads}")
        if not 0 < self.alpha_min <= self.alpha_max:
            raise ConfigError(
                f"model.las.alpha_min and alpha_max must satisfy 0 < alpha_min <= alpha_max, "
                f"got {self.alpha_min}, {self.alpha_max}"
            )
        return self


def head_alphas(cfg: ModelConfig) -> list[float]:
    """Per-head decay rates: las.alphas if given, else `global_heads` zeros then a geometric range."""
    if cfg.las.alphas is not None:
        return list(cfg.las.alphas)
    local = cfg.n_head - cfg.las.global_heads
    rates = np.geomspace(cfg.las.alpha_min, cfg.las.alpha_max, local).tolist() if local else []
    return [0.0] * cfg.las.global_heads + rates


def causal_pool(probs: torch.Tensor, kernel: int, visible: torch.Tensor) -> torch.Tensor:
    """Average each row over keys j..j+kernel-1, keep visible keys, renormalise rows."""
    *lead, q, k = probs.shape
    flat = F.pad(probs.reshape(-1, 1, k), (0, kernel - 1))
    pooled = F.avg_pool1d(flat, kernel, stride=1).reshape(*lead, q, k)
    pooled = pooled.masked_fill(~visible, 0.0)
    return pooled / pooled.sum(-1, keepdim=True)


class LaSAttention(XLAttention):
    name = "las"
    description = "Transformer-XL attention with locality (per-head logit decay) and smoothness (causal key pooling)"
    locality = True
    smoothness = True
    fast_impls = frozenset()  # the multiplicative decay and the pooling have no fused form here

    def __init__(self, cfg: ModelConfig, layer: LayerConfig):
        super().__init__(cfg, layer)
        self.kernel = cfg.las.kernel
        # a buffer, not a parameter, and not saved: LaS adds nothing trainable to the xl layer
        self.register_buffer("alpha", torch.tensor(head_alphas(cfg), dtype=torch.float32), persistent=False)

    @classmethod
    def mixing_flops(cls, cfg: ModelConfig, layer: LayerConfig, keys: float, klen: int, tgt_len: int) -> float:
        extra = (cfg.n_head * keys if cls.locality else 0) + (
            cfg.n_head * keys * (cfg.las.kernel + 2) if cls.smoothness else 0
        )
        return super().mixing_flops(cfg, layer, keys, klen, tgt_len) + extra

    def attend(self, q, k, v, limit, ctx):
        scores = self.scores(q, k, ctx)
        qlen, klen = scores.shape[-2:]
        if self.locality:
            d = ctx.masks.distances(qlen, klen).clamp(min=0)
            scores = scores * torch.exp(-self.alpha[:, None, None] * d).to(scores.dtype)
        probs = self.softmax(scores, limit, ctx)
        if self.smoothness and self.kernel > 1:
            probs = causal_pool(probs, self.kernel, ctx.masks.visible(qlen, klen, limit))
        return self.dropatt(probs.to(v.dtype)) @ v


class LocalityAttention(LaSAttention):
    name = "las-local"
    description = "LaS with locality only (per-head logit decay)"
    smoothness = False


class SmoothnessAttention(LaSAttention):
    name = "las-smooth"
    description = "LaS with smoothness only (causal average pooling over keys)"
    locality = False
