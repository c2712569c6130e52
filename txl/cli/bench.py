"""txl bench: training throughput, attention variants as segments grow,
the fused kernels (measured here, not in tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from txl.cli.args import Parser, add_overrides, command, int_list
from txl.cli.bench_kernel import bench_kernel, kernel_args


def _train_args(sub) -> None:
    t = sub.add_parser(
        "train",
        help="training-step and evaluation throughput, MFU and peak memory of a preset or config",
        description="Whole training steps (forward, backward, Adam) with memory carried from step to step, after "
        "a warm-up, median of --steps; evaluation forwards likewise. --compare runs the plain reference path "
        "and the fast path in the same process; several --memory plans are measured side by side.",
    )
    t.add_argument("--preset", default="enwik8-base", help="a preset (default enwik8-base)")
    t.add_argument("--config", help="a JSON run config instead of a preset")
    t.add_argument(
        "--memory", action="append", metavar="PLAN", help="memory plan(s) to measure (default: the config's)"
    )
    t.add_argument(
        "--impl", default="auto", help="comma-separated attention implementations: auto, plain, sdpa, flex, fused"
    )
    t.add_argument(
        "--compare", action="store_true", help="measure plain and the fast path (auto) and print their ratio"
    )
    t.add_argument("--batch-size", type=int)
    t.add_argument("--tgt-len", type=int)
    t.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="default: the config's")
    t.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    t.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    t.add_argument("--eval-steps", type=int, default=10)
    t.add_argument("--device", default="auto")
    add_overrides(t, help=None)
    t.add_argument("--out", metavar="FILE.json")
    t.add_argument(
        "--profile",
        metavar="DIR",
        help="also profile each case (torch.profiler): an operator table and a Chrome trace in DIR",
    )
    t.add_argument("--markdown", action="store_true")


def _bench_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench_command", metavar="WHAT", parser_class=Parser, required=True)
    v = sub.add_parser(
        "variants",
        help="forward+backward time and peak memory of one attention layer per variant, against xl, as segments grow",
        description="Forward+backward time and peak memory of one attention layer per variant, relative to xl at "
        "each segment length, and how each grows from the shortest length to the longest. On a CPU each case "
        "runs in a fresh process so its peak memory can be measured.",
    )
    v.add_argument(
        "--variants",
        default="xl,las,las-local,las-smooth,alibi,t5,sikf,sikf+fastrpb,fastrpb",
        help="comma-separated; 'fastrpb' alone times the W V term by itself",
    )
    v.add_argument(
        "--lengths", type=int_list, default=[512, 2048, 8192], help="segment lengths (default 512,2048,8192)"
    )
    v.add_argument("--mem-len", type=int, default=0, help="memory positions in front of each segment (default 0)")
    v.add_argument("--d-model", type=int, default=256)
    v.add_argument("--n-head", type=int, default=4)
    v.add_argument("--d-head", type=int, default=64)
    v.add_argument("--batch", type=int, default=1)
    v.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up; the median is kept")
    v.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    v.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    v.add_argument("--out", metavar="FILE.json", help="also write the raw measurements here")
    v.add_argument("--markdown", action="store_true")

    _train_args(sub)
    kernel_args(sub)


@command(
    "bench",
    "benchmarks: training throughput, and attention variants as segments grow (measured here, not in tests)",
    _bench_args,
)
def cmd_bench(args: argparse.Namespace) -> int:
    from txl.bench.attention import bench_device, variants_benchmark, variants_table
    from txl.core.io import atomic_write_json
    from txl.model.plans import ATTENTION
    from txl.plan.language import parse_plan

    if args.bench_command == "train":
        return bench_train(args)
    if args.bench_command == "kernel":
        return bench_kernel(args)
    device = bench_device(args.device)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    for name in names:
        if name != "fastrpb":
            parse_plan(name, 1, ATTENTION)  # unknown names fail here, listing the known ones
    rows = variants_benchmark(
        names,
        args.lengths,
        device=device,
        mem_len=args.mem_len,
        batch=args.batch,
        d_model=args.d_model,
        n_head=args.n_head,
        d_head=args.d_head,
        repeats=args.repeats,
        dtype=args.dtype,
    )
    print(
        f"device {device}; one attention layer, d_model {args.d_model}, {args.n_head} heads of {args.d_head}, "
        f"batch {args.batch}, memory {args.mem_len}, {args.dtype}, forward+backward, median of {args.repeats}"
    )
    print(variants_table(rows, args.markdown, absolute=device.startswith("cuda")))
    for r in rows:
        if "error" in r:
            print(f"  {r['attn']} @{r['seq_len']}: {r['error']}")
    if args.out:
        atomic_write_json(
            args.out, {"device": device, "args": {k: v for k, v in vars(args).items() if k != "func"}, "rows": rows}
        )
    return 0


def bench_train(args: argparse.Namespace) -> int:
    import importlib.util

    import torch

    from txl.bench.attention import bench_device
    from txl.bench.train import train_benchmark, train_table
    from txl.config import apply_overrides, load_config
    from txl.core.io import atomic_write_json
    from txl.model.plans import check_run
    from txl.train.presets import get_preset

    run = load_config(args.config) if args.config else get_preset(args.preset)
    for flag, name in (("batch_size", "batch_size"), ("tgt_len", "tgt_len"), ("precision", "precision")):
        if getattr(args, flag):
            setattr(run.train, name, getattr(args, flag))
    check_run(apply_overrides(run, args.overrides))
    notes = []
    if run.train.optimizer == "lamb" and importlib.util.find_spec("timm") is None:
        run.train.optimizer = "adam"  # timing needs an optimizer, not LAMB's numbers
        notes.append("timm is not installed: adam stands in for lamb")
    if run.train.grad_accum > 1:
        notes.append(f"the whole batch in one chunk, not train.grad_accum={run.train.grad_accum} (peak memory differs)")
    if run.train.compile:
        notes.append("evaluation runs uncompiled")
    device = torch.device(bench_device(args.device))
    impls = ["plain", "auto"] if args.compare else [i.strip() for i in args.impl.split(",") if i.strip()]
    rows, precision = train_benchmark(
        run,
        impls,
        args.memory or [None],
        device,
        args.steps,
        args.warmup,
        args.eval_steps,
        profile=Path(args.profile) if args.profile else None,
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {name}; {args.config or args.preset}: batch {run.train.batch_size} x {run.train.tgt_len} tokens, "
        f"{precision}{', compiled' if run.train.compile else ''}, torch {torch.__version__}; the trainer's step "
        f"(clipping, {run.train.optimizer}); median of {args.steps} steps after {args.warmup}"
    )
    for note in notes:
        print(f"note: {note}")
    print(train_table(rows, args.markdown))
    for r in rows:
        if r.get("profile"):
            print(f"profile      {r['profile']} (and a Chrome trace beside it)")
    if args.out:
        atomic_write_json(
            args.out, {"device": name, "precision": precision, "preset": args.config or args.preset, "rows": rows}
        )
    return 0
