"""Benchmarks of whole training steps: throughput, peak memory and model FLOPs utilisation per implementation and plan.

Figures are compared within one run (ratios against the first row); absolute times mean something only on the GPU
they were taken on. The attention benchmark and `bench_device` are in txl.bench.attention.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from txl.attention.fast import IMPLS, resolve_impl
from txl.bench.attention import sync
from txl.core.errors import TxlError
from txl.core.table import format_table

log = logging.getLogger(__name__)

# dense bf16 / tf32 / fp32 peak FLOP/s of common accelerators, for model FLOPs utilisation
PEAK_FLOPS = {
    "H200": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "H100": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}


def peak_flops(device: torch.device, precision: str, tf32: bool) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, table in PEAK_FLOPS.items():
        if key in name:
            mode = "bf16" if precision in ("bf16", "fp16") else ("tf32" if tf32 else "fp32")
            return table[mode]
    return None


@dataclass
class TrainCase:
    label: str
    impl: str  # plain, sdpa, flex, or auto
    memory: str | None = None  # memory plan; None keeps the config's


def _train_setup(run, case: TrainCase, device: torch.device, precision: str):
    """The case's model, the trainer's own step (its optimizer, fused on a GPU; clipping; schedule; loss scaler;
    train.compile) and four fixed batches, seeded."""
    import copy

    from txl.model.plans import apply_plans
    from txl.model.transformer import TransformerXL
    from txl.train.optim import TrainStep

    cfg = apply_plans(copy.deepcopy(run.model), memory=case.memory)
    cfg.attn_impl = case.impl
    torch.manual_seed(0)
    model = TransformerXL(cfg).to(device)
    net = torch.compile(model) if run.train.compile else model
    train = copy.deepcopy(run.train)
    train.grad_accum = 1
    step = TrainStep(model, net, train, device, precision)
    b, t = run.train.batch_size, run.train.tgt_len
    gen = torch.Generator(device="cpu").manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (b, t + 1), generator=gen).to(device) for _ in range(4)]
    return cfg, model, step, batches


def _train_step(step, tokens, mems, i: int):
    """One whole training step (forward, backward, clipping, the optimizer), memory carried; returns the new memory."""
    from types import SimpleNamespace

    segment = SimpleNamespace(inputs=tokens[:, :-1], targets=tokens[:, 1:], mask=None)
    _, _, new_mems = step(segment, [mems], i)
    step.updating = False
    return new_mems[0]


def run_train_case(
    run, case: TrainCase, device: torch.device, precision: str, steps: int, warmup: int, eval_steps: int
) -> dict:
    """Median time of whole training steps (forward, backward, Adam) and of evaluation forwards, memory carried."""
    from txl.evaluation.evaluate import autocast
    from txl.model.budget import budget

    cfg, model, step, batches = _train_setup(run, case, device, precision)
    b, t = run.train.batch_size, run.train.tgt_len
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    mems = None
    times = []
    model.train()
    for i in range(warmup + steps):
        sync(str(device))
        start = time.perf_counter()
        mems = _train_step(step, batches[i % len(batches)], mems, i)
        sync(str(device))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    eval_times = []
    model.eval()
    mems = None
    with torch.no_grad():
        for i in range(warmup + eval_steps):
            tokens = batches[i % len(batches)]
            sync(str(device))
            start = time.perf_counter()
            with autocast(device, precision):
                model(tokens[:, :-1], mems, tokens[:, 1:])
            sync(str(device))
            if i >= warmup:
                eval_times.append(time.perf_counter() - start)
    step = statistics.median(times)
    bud = budget(cfg, t, b)
    flops_per_token = 3.0 * (bud.dense_flops_per_token + bud.attn_flops_per_token)  # forward + backward
    peak_rate = peak_flops(device, precision, run.train.tf32)
    tokens_per_s = b * t / step
    return {
        "label": case.label,
        "impl": resolve_impl(case.impl, device),
        "memory": bud.plan["memory"],
        "ms_per_step": step * 1e3,
        "tokens_per_s": tokens_per_s,
        "mfu": flops_per_token * tokens_per_s / peak_rate if peak_rate else None,
        "peak_gib": peak / 2**30 if peak is not None else None,
        "eval_tokens_per_s": b * t / statistics.median(eval_times) if eval_times else None,
        "flops_per_token": flops_per_token,
    }


def profile_train_case(
    run, case: TrainCase, device: torch.device, precision: str, out_dir: Path, steps: int = 3, warmup: int = 2
) -> tuple[Path, str]:
    """Where a training step's time goes: `steps` steps under torch.profiler after `warmup`; writes the operator
    table (by self time on the device, or on the CPU without one) and a Chrome trace; returns (table file, table)."""
    from torch.profiler import ProfilerActivity, profile

    from txl.core.io import atomic_write_text

    _, model, step, batches = _train_setup(run, case, device, precision)
    model.train()
    mems = None
    for i in range(warmup):
        mems = _train_step(step, batches[i % len(batches)], mems, i)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, profile_memory=True) as prof:
        for i in range(steps):
            mems = _train_step(step, batches[i % len(batches)], mems, i)
        sync(str(device))
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=30)
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", case.label).strip("-")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"profile-{slug}.txt"
    atomic_write_text(
        path,
        f"{case.label}: {steps} profiled training steps after {warmup} warm-up steps (apart from the "
        f"timed ones), {precision}, sorted by {key}\n\n{table}\n",
    )
    prof.export_chrome_trace(str(out_dir / f"profile-{slug}.json"))
    return path, table


def train_table(rows: list[dict], markdown: bool = False) -> str:
    base = rows[0]
    out = []
    for r in rows:
        out.append(
            [
                r["label"],
                r["impl"],
                r["memory"],
                round(r["tokens_per_s"]),
                r["tokens_per_s"] / base["tokens_per_s"],
                r["ms_per_step"],
                "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
                "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}",
                None if r["eval_tokens_per_s"] is None else round(r["eval_tokens_per_s"]),
            ]
        )
    headers = [
        "case",
        "impl",
        "memory",
        "tokens/s",
        f"x {base['label']}",
        "ms/step",
        "MFU",
        "peak GiB",
        "eval tokens/s",
    ]
    return format_table(headers, out, markdown)


def train_benchmark(
    run,
    impls: list[str],
    plans: list[str | None],
    device: torch.device,
    steps: int,
    warmup: int,
    eval_steps: int,
    profile: Path | None = None,
) -> tuple[list[dict], str]:
    """One row per (plan, implementation), measured in this process; returns the rows and the precision used.
    With `profile` (a folder), each case is then profiled too (profile_train_case) and its row names the table."""
    from txl.core.devices import pick_precision

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = run.train.tf32
        torch.backends.cudnn.allow_tf32 = run.train.tf32
    precision = pick_precision(run.train.precision, device)

    for impl in impls:
        if impl not in IMPLS:
            raise TxlError(f"unknown --impl {impl!r} (use {', '.join(IMPLS)})")
        resolve_impl(impl, device)  # one that cannot run here is refused before anything is measured
    cases = [TrainCase(f"{impl}" + (f" {plan}" if plan else ""), impl, plan) for plan in plans for impl in impls]
    rows = []
    for case in cases:
        log.info(f"measuring {case.label} ...")
        rows.append(run_train_case(run, case, device, precision, steps, warmup, eval_steps))
        if profile is not None:
            rows[-1]["profile"] = str(profile_train_case(run, case, device, precision, Path(profile))[0])
    return rows, precision
