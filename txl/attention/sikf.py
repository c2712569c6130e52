"""Linear attention with the shift-invariant exponential kernel (SIKF; Zubkov & Gavrilov, 2022).

    phi(x) = exp(x - offset),   out_i = sum_{j<=i} (phi(q_i).phi(k_j)) v_j / sum_{j<=i} phi(q_i).phi(k_j)

A constant offset cancels between numerator and denominator, as in softmax; the paper
uses mean(Q) + mean(K) per batch and head. That mean includes future positions, so
although it cancels mathematically, it lets future tokens move past outputs by a
rounding error. Here every offset is causal: each query subtracts the mean of its
own entries, and keys subtract a reference taken from earlier segments (the mean of
the previous segment's keys; 0 at the start), the carried sums being rescaled when
the reference moves. The result is the same, exactly causal in floating point, and
segment-by-segment processing equals one-piece processing. The causal form runs chunk by chunk: a
masked quadratic product inside a chunk, prefix sums S = sum phi(k) v^T and
z = sum phi(k) across chunks and, with mem_len > 0, across segments. That state,
O(d_head^2) per head, is the layer's memory; it summarises the whole past.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from txl.attention.base import Attention
from txl.config import ConfigError, LayerConfig, ModelConfig
from txl.config.domains import AT_LEAST_1, positive
from txl.config.model import variant_settings


@variant_settings("sikf", {"chunk": AT_LEAST_1}, omit_default=False)
@dataclass
class SIKFConfig:
    """model.sikf: how every sikf layer computes its causal prefix sums."""

    chunk: int = 64  # block size of the chunked causal prefix sums

    def validate(self, model: ModelConfig) -> SIKFConfig:
        positive(self, "model.sikf", ["chunk"])
        return self


def quadratic(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference form: (B, H, Q, dh) features and values, causal mask, normalised rows."""
    a = (fq @ fk.transpose(-1, -2)).tril()
    return (a @ v) / a.sum(-1, keepdim=True)


class SIKFAttention(Attention):
    name = "sikf"
    description = "linear attention, exp(x - offset) features, running sums carried across segments"

    def __init__(self, cfg: ModelConfig, layer: LayerConfig):
        super().__init__(cfg, layer)
        self.chunk = cfg.sikf.chunk

    @classmethod
    def check_layer(cls, layer: LayerConfig, where: str, same_length: bool = False) -> None:
        if layer.attn_range is not None:
            raise ConfigError(
                f"{where}: attention variant 'sikf' keeps running sums, not keys, so it cannot limit attn_range "
                f"({layer.attn_range}); set it to inf, or use a softmax variant in this layer"
            )
        if same_length and layer.mem_len > 0:
            raise ConfigError(
                f"{where}: attention variant 'sikf' carries its whole past, so model.same_length cannot apply; "
                "turn same_length off or set this layer's mem_len to 0"
            )

    @classmethod
    def cache_len(cls, layer: LayerConfig) -> int:
        return layer.mem_len if layer.fastrpb else 0  # hidden states are kept only for FastRPB's W V

    @classmethod
    def state_numel(cls, cfg: ModelConfig, layer: LayerConfig) -> int:
        # S (d x d) and z (d) per head, plus the sums' key offset and the next segment's
        return cfg.n_head * (cfg.d_head * cfg.d_head + cfg.d_head + 2) if layer.mem_len > 0 else 0

    @classmethod
    def unbounded(cls, layer: LayerConfig) -> bool:
        return layer.mem_len > 0

    @classmethod
    def mixing_flops(cls, cfg: ModelConfig, layer: LayerConfig, keys: float, klen: int, tgt_len: int) -> float:
        h, d, c = cfg.n_head, cfg.d_head, min(cfg.sikf.chunk, tgt_len)
        return h * (4.0 * d * d + 2.0 * d * c + 4.0 * d)  # state update and read, the chunk's own square, normaliser

    def attend_stateful(self, q, k, v, limit, ctx, state):
        qlen = q.size(2)
        k, v = k[..., -qlen:, :], v[..., -qlen:, :]  # earlier keys live in the carried sums
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        q, k, v32 = q.to(work), k.to(work), v.to(work)
        b, h, _, d = q.shape
        fq = torch.exp(q - q.mean(dim=-1, keepdim=True))
        if "sikf_s" in state:
            c = state["sikf_next"].to(work)  # (B, H): the key offset chosen after the previous segment
            rescale = torch.exp(state["sikf_c"].to(work) - c)  # the sums were taken with the old offset
            s_sum = state["sikf_s"].to(work) * rescale[..., None, None]
            z_sum = state["sikf_z"].to(work) * rescale[..., None]
        else:
            c = q.new_zeros(b, h)
            s_sum = q.new_zeros(b, h, d, d)
            z_sum = q.new_zeros(b, h, d)
        fk = torch.exp(k - c[..., None, None])
        outs = []
        for start in range(0, qlen, self.chunk):
            sl = slice(start, start + self.chunk)
            fq_c, fk_c, v_c = fq[..., sl, :], fk[..., sl, :], v32[..., sl, :]
            a = (fq_c @ fk_c.transpose(-1, -2)).tril()
            num = a @ v_c + fq_c @ s_sum
            den = a.sum(-1, keepdim=True) + fq_c @ z_sum[..., None]
            outs.append(num / den)
            s_sum = s_sum + fk_c.transpose(-1, -2) @ v_c
            z_sum = z_sum + fk_c.sum(-2)
        extra = {}
        if self.layer.mem_len > 0:
            extra = {
                "sikf_s": s_sum.detach(),
                "sikf_z": z_sum.detach(),
                "sikf_c": c.detach(),
                "sikf_next": k.mean(dim=(-2, -1)).detach(),
            }
        return torch.cat(outs, dim=-2).to(v.dtype), extra
