"""How each fused attention kernel is launched: its block, warps and pipeline stages, per operand kind and GPU.

The choice is static, from the kernels' compiled resources (`txl bench kernel`, which compiles them
for each architecture without a GPU): kept apart from the kernels so that the report can import it
without the kernels importing the report.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Launch(NamedTuple):
    """How one kernel is launched: its query and key block (equal, a power of two), warps and pipeline stages."""

    block: int
    warps: int
    stages: int


KERNELS = ("fwd", "dq", "dkdv")


def operand_kind(dtype: torch.dtype, precision: str) -> str:
    """half (bf16/fp16 operands), tf32 (float32 on tensor cores) or fp32 (float32, exact products)."""
    return "half" if dtype != torch.float32 else ("tf32" if precision == "tf32" else "fp32")


def default_launch(kernel: str, kind: str, capability: int = 90) -> Launch:
    """The launch of `kernel` for operands of `kind` on a GPU of compute capability `capability` (90 for sm_90),
    at head dims up to 64: the largest block whose compiled kernel spills nothing, or least, as `txl bench kernel`
    reports it (compiled for each architecture by Triton, no GPU needed; dq spills a little at every block on
    some). On sm_90 the dq kernel keeps 64-blocks, Hopper's warpgroup products, at 264 bytes spilled per thread,
    where 32-blocks spill none without them; a GPU timing of `txl bench kernel --time` decides it. Stages
    matter where pipelining makes ptxas spill (dkdv, exact fp32)."""
    if kind == "fp32":
        return Launch(16, 4, 2 if kernel == "fwd" else 1)
    if kind == "tf32":
        return Launch(32, 8, 1 if kernel == "dkdv" else 2)
    if capability >= 90:
        return Launch(64, 8, 1 if kernel == "dkdv" else 2)
    return Launch(32, 8, 2)


def launch_for(kernel: str, kind: str, capability: int, qlen: int, d_head: int) -> Launch:
    """default_launch, with smaller blocks for short segments and wide heads (d_head > 64 halves the block)."""
    base = default_launch(kernel, kind, capability)
    block = min(base.block, 64 if qlen >= 64 else (32 if qlen > 16 else 16))
    if d_head > 64:
        block = max(16, block // 2)
    return base if block == base.block else Launch(block, 4 if block == 16 else base.warps, base.stages)


def head_block(d_head: int) -> int:
    """The head dimension padded to a power of two, at least 16 (tl.dot's least)."""
    return max(16, 1 << (d_head - 1).bit_length())
