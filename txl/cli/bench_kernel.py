"""txl bench kernel: the fused kernels' launches, compiled for each GPU architecture (no GPU needed),
or timed on one."""

from __future__ import annotations

import argparse


def kernel_args(sub) -> None:
    k = sub.add_parser(
        "kernel",
        help="the fused attention kernels' registers, spills and shared memory per GPU architecture; --time on a GPU",
        description="Compiles the fused kernels' launches (the ones model.attn_impl=fused picks) for each named "
        "architecture with Triton's own ptxas, no GPU needed, and prints registers per thread, bytes spilled per "
        "thread, and shared memory against the architecture's limit. With --time (on a GPU) it times candidate "
        "launches of each kernel instead, beside sdpa given the position term as a bias.",
    )
    k.add_argument(
        "--arch",
        default="sm_90,sm_80,sm_86",
        help="comma-separated: sm_80, sm_86, sm_89, sm_90 (default sm_90,sm_80,sm_86)",
    )
    k.add_argument(
        "--operands", default="half,tf32,fp32", help="comma-separated: half (bf16/fp16), tf32, fp32 (default all)"
    )
    k.add_argument("--d-head", type=int, default=64)
    k.add_argument(
        "--seq-len", type=int, default=512, help="segment length; short ones get smaller blocks (default 512)"
    )
    k.add_argument(
        "--time",
        action="store_true",
        help="time launches on this GPU instead (batch x heads x seq-len, memory --mem-len)",
    )
    k.add_argument("--batch", type=int, default=22)
    k.add_argument("--heads", type=int, default=8)
    k.add_argument("--mem-len", type=int, default=512)
    k.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16", help="with --time")
    k.add_argument("--repeats", type=int, default=10)
    k.add_argument("--device", default="auto")
    k.add_argument("--out", metavar="FILE.json")
    k.add_argument("--markdown", action="store_true")


def bench_kernel(args: argparse.Namespace) -> int:
    import sys

    from txl.attention import fused_launch
    from txl.core.errors import TxlError
    from txl.core.io import atomic_write_json

    if args.time:
        import torch

        from txl.attention.fast import resolve_impl
        from txl.bench.attention import bench_device

        device = torch.device(bench_device(args.device))
        resolve_impl("fused", device)  # one line, before measuring anything, where the kernel cannot run
        rows = fused_launch.time_launches(
            args.batch,
            args.heads,
            args.seq_len,
            args.mem_len,
            args.d_head,
            getattr(torch, args.dtype),
            device,
            repeats=args.repeats,
        )
        name = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else "cpu (Triton's interpreter: says nothing of a GPU)"
        )
        print(
            f"device {name}; batch {args.batch}, {args.heads} heads of {args.d_head}, {args.seq_len} queries, "
            f"memory {args.mem_len}, {args.dtype}, full range; median of {args.repeats}"
        )
        print(fused_launch.time_table(rows, args.markdown))
    else:
        arches = [a.strip() for a in args.arch.split(",") if a.strip()]
        kinds = [k.strip() for k in args.operands.split(",") if k.strip()]
        for kind in kinds:
            if kind not in fused_launch.KINDS:
                raise TxlError(f"unknown operands {kind!r}: use half, tf32 or fp32")
        specs = fused_launch.launch_specs(arches, kinds, args.d_head, args.seq_len)
        print(f"compiling {len(specs)} kernels with triton's ptxas (no GPU needed) ...", file=sys.stderr, flush=True)
        rows = fused_launch.compile_kernels(specs)
        print(
            f"fused kernels' launches for d_head {args.d_head}, segments of {args.seq_len}: "
            "registers and bytes spilled per thread, shared memory per block"
        )
        print(fused_launch.resource_table(rows, args.markdown))
        name = "static"
    if args.out:
        atomic_write_json(
            args.out, {"device": name, "args": {k: v for k, v in vars(args).items() if k != "func"}, "rows": rows}
        )
    return 0
