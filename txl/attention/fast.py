"""Fast attention paths; the plain path in each variant stays the reference they are tested against.

- `sdpa`: torch's scaled_dot_product_attention with the variant's position term as a float
  bias (-inf where a key is not visible): a fused softmax that never forms the
  probabilities, with attention dropout, on every device.
- `flex`: FlexAttention (torch >= 2.5), the position term applied inside the kernel by a
  score_mod and visibility by a block mask, so blocks of keys a query cannot see (beyond
  a layer's attention range, or in the future) are skipped, not masked. Compiled on a
  GPU; FlexAttention has no backward pass on a CPU, and no attention dropout (sdpa
  stands in while dropout is on).

- `fused`: txl's own Triton kernel for Transformer-XL attention (txl.attention.fused), which forms
  the position term block by block inside the kernel; needs triton, and a GPU or Triton's
  interpreter. No attention dropout: sdpa stands in while dropout is on.

`auto` picks sdpa on a GPU and plain on a CPU (fused only once a GPU figure shows it ahead).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from txl.core.errors import TxlError

IMPLS = ("auto", "plain", "sdpa", "flex", "fused")


def resolve_impl(name: str, device: torch.device) -> str:
    if name == "auto":
        return "sdpa" if device.type == "cuda" else "plain"
    if name == "fused":
        from txl.attention.fused import available

        if not available(device):
            raise TxlError(
                "model.attn_impl=fused needs triton and a GPU (pip install -e '.[gpu]'; on a CPU only under "
                "TRITON_INTERPRET=1, for tests); use plain or sdpa"
            )
    return name


def attend_sdpa(attn, q, k, v, limit, ctx) -> torch.Tensor:
    qlen, klen = q.size(2), k.size(2)
    bias = attn.score_bias(q, klen, ctx)
    mask = bias.masked_fill(~ctx.masks.visible(qlen, klen, limit), -math.inf).to(q.dtype)
    return F.scaled_dot_product_attention(
        attn.content_query(q, ctx),
        k,
        v,
        attn_mask=mask,
        dropout_p=attn.dropatt.p if attn.training else 0.0,
        scale=attn.scale,
    )


@lru_cache(maxsize=1)
def _flex_fn(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if device_type == "cuda" else flex_attention


@lru_cache(maxsize=64)
def block_mask(qlen: int, klen: int, limit: float, device: str, block: int = 128):
    """Which (query block, key block) pairs hold any visible key; the others are never computed."""
    from torch.nn.attention.flex_attention import create_block_mask

    mlen = klen - qlen
    if limit == math.inf:

        def visible(b, h, q_idx, kv_idx):
            return mlen + q_idx - kv_idx >= 0

    else:
        lim = int(limit)

        def visible(b, h, q_idx, kv_idx):
            d = mlen + q_idx - kv_idx
            return (d >= 0) & (d <= lim)

    return create_block_mask(visible, None, None, qlen, klen, device=device, BLOCK_SIZE=block)


def attend_fused(attn, q, k, v, limit, ctx) -> torch.Tensor:
    from txl.attention.fused_op import fused_attention

    u, vb = attn.biases(ctx)
    rd = attn.position_keys(k.size(2), ctx).flip(1)  # (H, K, dh) by distance 0 .. K-1
    return fused_attention(q + u[:, None], q + vb[:, None], k, v, rd, limit, attn.scale)


def attend_flex(attn, q, k, v, limit, ctx) -> torch.Tensor:
    qlen, klen = q.size(2), k.size(2)
    mask = block_mask(qlen, klen, limit, str(q.device))
    score_mod = attn.flex_score_mod(q, klen, ctx)
    return _flex_fn(q.device.type)(
        attn.content_query(q, ctx), k, v, score_mod=score_mod, block_mask=mask, scale=attn.scale
    )
