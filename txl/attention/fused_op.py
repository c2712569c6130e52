"""The fused attention kernel as a PyTorch operator: `fused_attention`, with its autograd and shapes.

The kernels (txl.attention.fused) are registered as two custom operators, forward and backward
(`torch.library.custom_op`), with fake implementations that give their outputs' shapes and
strides: torch.compile (`train.compile`) then keeps each as one opaque node instead of
tracing into Triton's launcher, and compiles the LayerNorms, residuals and the rest around
it. In eager mode the operators simply run the kernels.
"""

from __future__ import annotations

import math

import torch

from txl.attention import fused
from txl.attention.launches import KERNELS, Launch


def _launches(flat: list[int]) -> dict[str, Launch]:
    return {name: Launch(*flat[3 * i : 3 * i + 3]) for i, name in enumerate(KERNELS)}


@torch.library.custom_op("txl::fused_attention_fwd", mutates_args=())
def _fwd_op(
    qu: torch.Tensor,
    qv: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rd: torch.Tensor,
    limit: int,
    scale: float,
    launches: list[int],
    prec: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return fused.forward_launch(qu, qv, k, v, rd, limit, scale, _launches(launches)["fwd"], prec)


@_fwd_op.register_fake
def _(qu, qv, k, v, rd, limit, scale, launches, prec):
    B, H, Q, D = qu.shape
    o = qu.new_empty(B, Q, H, D).transpose(1, 2)
    blocks = -(-Q // launches[0])
    return o, qu.new_empty(B * H, Q, dtype=torch.float32), qu.new_empty(B * H, blocks, dtype=torch.int32)


@torch.library.custom_op("txl::fused_attention_bwd", mutates_args=())
def _bwd_op(
    do: torch.Tensor,
    qu: torch.Tensor,
    qv: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rd: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    limit: int,
    scale: float,
    launches: list[int],
    prec: str,
    deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    run = _launches(launches)
    return fused.backward_launch(
        do, qu, qv, k, v, rd, o, lse, limit, scale, run["dq"], run["dkdv"], prec, deterministic
    )


@_bwd_op.register_fake
def _(do, qu, qv, k, v, rd, o, lse, limit, scale, launches, prec, deterministic):
    return (
        torch.empty_like(qu),
        torch.empty_like(qv),
        torch.empty_like(k),
        torch.empty_like(v),
        rd.new_empty(rd.shape, dtype=torch.float32),
    )


def _setup_context(ctx, inputs, output):
    qu, qv, k, v, rd, limit, scale, launches, prec = inputs
    o, lse, visits = output
    ctx.save_for_backward(qu, qv, k, v, rd, o, lse)
    ctx.args = (limit, scale, launches, prec)
    ctx.mark_non_differentiable(lse, visits)
    ctx.set_materialize_grads(False)  # no zero gradients made for them every layer


def _backward(ctx, do, _dlse, _dvisits):
    if do is None:
        return None, None, None, None, None, None, None, None, None
    qu, qv, k, v, rd, o, lse = ctx.saved_tensors
    limit, scale, launches, prec = ctx.args
    dqu, dqv, dk, dv, drd = _bwd_op(
        do, qu, qv, k, v, rd, o, lse, limit, scale, launches, prec, torch.are_deterministic_algorithms_enabled()
    )
    return dqu, dqv, dk, dv, drd.to(rd.dtype), None, None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def fused_attention(
    qu: torch.Tensor,
    qv: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rd: torch.Tensor,
    limit: float,
    scale: float,
    visits: list | None = None,
    launches: dict[str, Launch] | None = None,
) -> torch.Tensor:
    """(B, H, Q, D) qu = q + u and qv = q + v; (B, H, K, D) keys and values over [memory; segment]; (H, K, D)
    projected position embeddings by distance 0 .. K-1. Returns (B, H, Q, D). Keys at distance above `limit`
    are not seen. `visits`, when a list, receives the (B*H, query blocks) count of key blocks visited;
    `launches` overrides the launch of any of KERNELS ("fwd", "dq", "dkdv")."""
    if fused.triton is None:
        raise RuntimeError("the fused attention kernel needs triton (pip install 'txl[gpu]')")
    # one dtype for every product's operands (under autocast q + u is float32 while k and v are bf16); rd keeps its
    # own, the kernel casts the rows it loads, so a float32 rd gets its gradient summed and returned in float32
    qu, qv, k, v = (t.to(k.dtype).contiguous() for t in (qu, qv, k, v))
    rd = rd.contiguous()
    run, prec = fused.plan_launches(qu, qu.size(-1), launches)
    limit = k.size(2) if limit == math.inf else int(limit)
    o, _, counts = _fwd_op(qu, qv, k, v, rd, limit, scale, [x for name in KERNELS for x in run[name]], prec)
    if visits is not None:
        visits.append(counts)
    return o
