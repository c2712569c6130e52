"""A fused Transformer-XL attention kernel in Triton, forward and backward.

    out = softmax(((q+u) k^T + rel((q+v) R^T)) * scale + mask) v

over keys [memory; segment], block by block with an online softmax: the (queries x keys)
scores, probabilities and position terms are never written to memory. For a block of
B queries and a block of B keys the distances d = mlen + i - j form a band of 2B - 1
values, which splits into two halves of B distances; the position term of the pair is the
product of the query block with the two halves of projected position embeddings, then a
diagonal shift (`tl.gather`). Key blocks are visited in order, so one block's lower half is
the next one's upper half: each key block costs one (B x B) position product, as much as
its content product. Key blocks wholly outside a layer's reach (beyond its attention range,
or in the future) are never visited, so the cost falls with the range.

The kernel takes qu = q + u and qv = q + v (formed outside, so autograd turns their
gradients into those of q, u and v) and the projected embeddings in distance order,
rd[h, d] = W_r R_d (clamp_len already applied). Its backward gives dqu, dqv, dk, dv and
drd; the position gradient sums over queries and batch with atomic adds into a float32
buffer, one per query block and band half (under torch.use_deterministic_algorithms each
program stores into a slice of its own instead, summed in a fixed order after). Inputs may
be float32, bfloat16 or float16; products accumulate in float32 (the position term is
rounded to the inputs' dtype, as a matmul under autocast rounds it). Attention dropout is
not supported (the caller falls back to another path). Each kernel's launch (block, warps,
stages) is chosen per operand kind and GPU architecture from its compiled resources
(`txl.attention.launches`, from the report in `txl.attention.fused_launch`).

`txl.attention.fused_op` makes the kernels one PyTorch operator (`fused_attention`), with
its autograd and its shapes for torch.compile; this module only launches them.

Without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, CPU tensors),
which is how the tests check them against the plain path.
"""

from __future__ import annotations

import os

import torch

from txl.attention.launches import KERNELS, Launch, head_block, launch_for, operand_kind

try:  # an optional dependency (pip install 'txl[gpu]'); txl runs without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is missing
    triton = None


def available(device: torch.device | None = None) -> bool:
    """Triton is importable and can run here: on a CUDA device, or anywhere under its interpreter."""
    if triton is None or not hasattr(tl, "gather"):  # tl.gather arrived in triton 3.3
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return device is not None and device.type == "cuda"


if triton is not None:
    from txl.attention.fused_kernels import _bwd_dkdv, _bwd_dq, _fwd


def _precision(t: torch.Tensor) -> str:
    """tl.dot's input precision: float32 inputs as torch would multiply them (tf32 only where torch allows it)."""
    if t.dtype != torch.float32:
        return "ieee"  # bf16/fp16 operands: the precision flag does not apply
    return "tf32" if t.is_cuda and torch.backends.cuda.matmul.allow_tf32 else "ieee"


DETERMINISTIC_BUFFER_BYTES = 256 * 2**20  # per launch of dq under torch.use_deterministic_algorithms


def batch_chunks(batch: int, slices_per_sequence: int, slice_bytes: int, deterministic: bool) -> list[tuple[int, int]]:
    """The batch ranges the dq kernel runs over, one launch each: the whole batch, adding the position gradient
    atomically into one buffer; or, under torch.use_deterministic_algorithms, as many sequences at a time as
    keep their programs' own slices (one per query block and sequence) within DETERMINISTIC_BUFFER_BYTES."""
    if not deterministic:
        return [(0, batch)]
    step = max(1, min(batch, DETERMINISTIC_BUFFER_BYTES // max(1, slices_per_sequence * slice_bytes)))
    return [(b, min(batch, b + step)) for b in range(0, batch, step)]


def _capability(t: torch.Tensor) -> int:
    if not t.is_cuda:
        return 90  # Triton's interpreter: launch as for an H100
    major, minor = torch.cuda.get_device_capability(t.device)
    return 10 * major + minor


def forward_launch(qu, qv, k, v, rd, limit: int, scale: float, fwd: Launch, prec: str):
    """Launch the forward kernel: (B, H, Q, D) output (heads-last in memory), (B*H, Q) log-sum-exp and the
    (B*H, query blocks) count of key blocks visited. qu, qv, k, v share one dtype and are contiguous."""
    qu, qv, k, v, rd = (
        t.contiguous() for t in (qu, qv, k, v, rd)
    )  # the kernels share qu's strides with qv, k's with v
    B, H, Q, D = qu.shape
    K = k.size(2)
    # written as (B, Q, H, D): the heads' merge before the output projection is then a view, so the output
    # kept for backward and the projection's input kept by autograd are one tensor, not two
    o = torch.empty(B, Q, H, D, device=qu.device, dtype=qu.dtype).transpose(1, 2)
    lse = torch.empty(B * H, Q, device=qu.device, dtype=torch.float32)
    grid = (triton.cdiv(Q, fwd.block), B * H)
    visits = torch.zeros(B * H, grid[0], device=qu.device, dtype=torch.int32)
    _fwd[grid](
        qu,
        qv,
        k,
        v,
        rd,
        o,
        lse,
        visits,
        *qu.stride()[:3],
        *k.stride()[:3],
        *o.stride()[:3],
        *rd.stride()[:2],
        H,
        Q,
        K,
        D,
        K - Q,
        limit,
        scale,
        BM=fwd.block,
        BN=fwd.block,
        BD=head_block(D),
        PREC=prec,
        num_warps=fwd.warps,
        num_stages=fwd.stages,
    )
    return o, lse, visits


def backward_launch(
    do, qu, qv, k, v, rd, o, lse, limit: int, scale: float, dq: Launch, dkdv: Launch, prec: str, deterministic: bool
):
    """Launch the backward kernels: dqu, dqv, dk, dv in the operands' dtype and drd in float32."""
    qu, qv, k, v, rd, do = (t.contiguous() for t in (qu, qv, k, v, rd, do))
    B, H, Q, D = qu.shape
    K = k.size(2)
    delta = (do.float() * o.float()).sum(-1).reshape(B * H, Q).contiguous()  # o is heads-last
    dqu, dqv = torch.empty_like(qu), torch.empty_like(qv)
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    blocks = triton.cdiv(Q, dq.block)
    common = (*qu.stride()[:3], *k.stride()[:3], *rd.stride()[:2], H, Q, K, D, K - Q, limit, scale)
    meta = dict(BD=head_block(D), PREC=prec)
    drd = torch.zeros(rd.shape, device=rd.device, dtype=torch.float32)
    for b0, b1 in batch_chunks(B, blocks, rd.numel() * 4, deterministic):
        # deterministic: each program stores into a slice of its own (it writes each distance once), summed in order
        out = (
            torch.zeros((blocks * (b1 - b0), *rd.shape), device=rd.device, dtype=torch.float32)
            if deterministic
            else drd
        )
        rows = slice(b0 * H, b1 * H)
        sliced = (t[b0:b1] for t in (qu, qv, k, v))
        grid = (blocks, (b1 - b0) * H)
        slices = rd.numel() if deterministic else 0
        _bwd_dq[grid](
            *sliced, rd, do[b0:b1], lse[rows], delta[rows], dqu[b0:b1], dqv[b0:b1], out, slices, *common,
            BM=dq.block, BN=dq.block, ATOMIC=not deterministic, num_warps=dq.warps, num_stages=dq.stages, **meta
        )  # fmt: skip
        if deterministic:
            drd += out.sum(0)
    _bwd_dkdv[(triton.cdiv(K, dkdv.block), B * H)](
        qu, qv, k, v, rd, do, lse, delta, dk, dv, *common,
        BM=dkdv.block, BN=dkdv.block, num_warps=dkdv.warps, num_stages=dkdv.stages, **meta
    )  # fmt: skip
    return dqu, dqv, dk, dv, drd


def plan_launches(qu: torch.Tensor, d_head: int, launches: dict | None) -> tuple[dict, str]:
    """Each kernel's launch (overrides first, else the table for these operands and this GPU) and tl.dot's precision."""
    prec = _precision(qu)
    kind, cap = operand_kind(qu.dtype, prec), _capability(qu)
    run = {name: (launches or {}).get(name) or launch_for(name, kind, cap, qu.size(2), d_head) for name in KERNELS}
    for name, launch in run.items():
        if launch.block < 16 or launch.block & (launch.block - 1):
            raise ValueError(
                f"fused attention: the {name} kernel's block must be a power of two >= 16, not {launch.block}"
            )
    return run, prec
