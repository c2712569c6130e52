"""Transformer-XL relative attention (Dai et al. 2019, section 3.3).

score(i, j) = (q_i + u) . k_j  +  (q_i + v) . W_r R_{i-j}, scaled by 1/sqrt(d_head),
with R the sinusoidal embedding of the distance (clamped at clamp_len) and u, v
learned global biases (one pair per layer with untie_r).
"""

from __future__ import annotations

import torch
from torch import nn

from txl.attention.base import Attention, AttnContext, rel_shift
from txl.config import LayerConfig, ModelConfig


class XLAttention(Attention):
    name = "xl"
    description = "Transformer-XL relative attention: content and position terms with global biases u, v"
    uses_rel_bias = True
    fast_impls = frozenset({"sdpa", "flex", "fused"})

    def __init__(self, cfg: ModelConfig, layer: LayerConfig):
        super().__init__(cfg, layer)
        self.r_proj = nn.Linear(cfg.d_model, cfg.n_head * cfg.d_head, bias=False)
        if cfg.untie_r:
            self.r_w_bias = nn.Parameter(torch.zeros(cfg.n_head, cfg.d_head))
            self.r_r_bias = nn.Parameter(torch.zeros(cfg.n_head, cfg.d_head))
        else:
            self.r_w_bias = self.r_r_bias = None

    @classmethod
    def param_count(cls, cfg: ModelConfig, layer: LayerConfig) -> int:
        n = super().param_count(cfg, layer) + cfg.d_model * cfg.n_head * cfg.d_head
        return n + (2 * cfg.n_head * cfg.d_head if cfg.untie_r else 0)

    @classmethod
    def mixing_flops(cls, cfg: ModelConfig, layer: LayerConfig, keys: float, klen: int, tgt_len: int) -> float:
        # The position term costs another q.r per key, and projecting the klen embeddings once a segment.
        position = 2.0 * cfg.n_head * cfg.d_head * keys + 2.0 * cfg.d_model * cfg.n_head * cfg.d_head * klen / tgt_len
        return super().mixing_flops(cfg, layer, keys, klen, tgt_len) + position

    def biases(self, ctx: AttnContext) -> tuple[torch.Tensor, torch.Tensor]:
        if self.r_w_bias is not None:
            return self.r_w_bias, self.r_r_bias
        return ctx.r_w_bias, ctx.r_r_bias

    def position_keys(self, klen: int, ctx: AttnContext) -> torch.Tensor:
        """(H, klen, dh) projected embeddings of distances klen-1 .. 0."""
        r = self.r_proj(ctx.pos_emb(klen))
        return r.view(klen, self.n_head, self.d_head).transpose(0, 1)

    def position_term(self, q: torch.Tensor, klen: int, ctx: AttnContext) -> torch.Tensor:
        """(B, H, Q, K) (q_i + v) . W_r R, unshifted: column c holds distance klen - 1 - c."""
        _, v = self.biases(ctx)
        return (q + v[:, None]) @ self.position_keys(klen, ctx).transpose(-1, -2)

    def scores(self, q: torch.Tensor, k: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        """(B, H, Q, K) scaled scores; entries for future keys are junk, masked later."""
        content = self.content_query(q, ctx) @ k.transpose(-1, -2)
        return (content + rel_shift(self.position_term(q, k.size(2), ctx))) * self.scale

    def content_query(self, q, ctx):
        u, _ = self.biases(ctx)
        return q + u[:, None]

    def score_bias(self, q, klen, ctx):
        return rel_shift(self.position_term(q, klen, ctx)) * self.scale

    def flex_score_mod(self, q, klen, ctx):
        position = self.position_term(q, klen, ctx)
        qlen, scale = q.size(2), self.scale

        def score_mod(score, b, h, q_idx, kv_idx):
            # distance mlen + i - j sits in column qlen - 1 - i + j; future keys (masked anyway) are clamped in range
            column = torch.clamp(qlen - 1 - q_idx + kv_idx, max=klen - 1)
            return score + position[b, h, q_idx, column] * scale

        return score_mod

    def attend(self, q, k, v, limit, ctx):
        if self.pick_impl(ctx) != "plain":
            return super().attend(q, k, v, limit, ctx)
        return self.softmax_attend(self.scores(q, k, ctx), v, limit, ctx)  # the reference: (content + position) * scale
