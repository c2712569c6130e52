"""FastRPB (Zubkov & Gavrilov, 2022): relative position information added outside the attention.

    out = Attention(Q, K, V) + W V,    W[i, j] = w_h[d],  d = mlen + i - j >= 0

W is causal Toeplitz over [memory; segment] with one learnable weight per offset and
head, so W V is a causal convolution of the values with w, computed by FFT in
O(K log K) (padded to 2K, so nothing wraps around). Offsets at or past
fastrpb.max_len, or beyond the layer's attention range, have no weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from txl.config import ModelConfig
from txl.config.domains import AT_LEAST_0, AT_LEAST_1, positive
from txl.config.model import variant_settings


@variant_settings("fastrpb", {"max_len": AT_LEAST_1, "init_scale": AT_LEAST_0}, omit_default=False)
@dataclass
class FastRPBConfig:
    """model.fastrpb: the Toeplitz term W V of every +fastrpb layer. Offsets at or past max_len contribute nothing."""

    max_len: int = 4096
    init_scale: float = 1e-3  # weights start on a ramp from init_scale (offset 0) down to 0

    def validate(self, model: ModelConfig) -> FastRPBConfig:
        positive(self, "model.fastrpb", ["max_len"])
        return self


def causal_conv_fft(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """y[.., k, :] = sum_{j <= k} w[.., k - j] v[.., j, :]. w: (H, K); v: (B, H, K, dh)."""
    klen = v.size(-2)
    n = 2 * klen
    dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
    wf = torch.fft.rfft(w.to(dtype), n=n, dim=-1)
    vf = torch.fft.rfft(v.to(dtype), n=n, dim=-2)
    return torch.fft.irfft(wf[..., None] * vf, n=n, dim=-2)[..., :klen, :].to(v.dtype)


def toeplitz(w: torch.Tensor, klen: int) -> torch.Tensor:
    """The explicit (H, K, K) causal Toeplitz matrix W[i, j] = w[i - j] (reference for tests)."""
    d = torch.arange(klen)[:, None] - torch.arange(klen)[None, :]
    return torch.where(d >= 0, w[:, d.clamp(min=0)], torch.zeros((), dtype=w.dtype))


def fft_flops_per_token(cfg: ModelConfig, klen: int, tgt_len: int) -> float:
    """Three real FFTs of length 2K (about 2.5 n log2 n each) and the product, per head and channel, per token."""
    n = 2 * klen
    return cfg.n_head * cfg.d_head * (3 * 2.5 * n * math.log2(n) + 6 * n) / tgt_len


class FastRPB(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.max_len = cfg.fastrpb.max_len
        self.weight = nn.Parameter(torch.zeros(cfg.n_head, cfg.fastrpb.max_len))

    def init_txl(self, cfg: ModelConfig) -> None:
        # a small ramp: largest at offset 0, falling to nothing at max_len (the paper's exact values are not verified)
        ramp = 1.0 - torch.arange(self.max_len, dtype=torch.float32) / self.max_len
        with torch.no_grad():
            self.weight.copy_(cfg.fastrpb.init_scale * ramp.expand_as(self.weight))

    def kernel(self, klen: int, limit: float) -> torch.Tensor:
        """(H, klen) weights per offset, zero past max_len and past the attention range."""
        n = int(min(klen, self.max_len, limit + 1))
        return F.pad(self.weight[:, :n], (0, klen - n))

    def forward(self, v: torch.Tensor, qlen: int, limit: float = math.inf) -> torch.Tensor:
        """(B, H, K, dh) values of [memory; segment] -> (B, H, qlen, dh): the segment rows of W V."""
        return causal_conv_fft(self.kernel(v.size(-2), limit), v)[..., -qlen:, :]
