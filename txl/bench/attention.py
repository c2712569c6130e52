"""Benchmarks: how time and memory grow with segment length, per attention variant (training steps: bench_train).

Figures are compared within one run (ratios against `xl`, or against the plain path);
absolute times mean something only on the GPU they were taken on.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from txl.core.errors import TxlError
from txl.core.table import format_table

log = logging.getLogger(__name__)


@dataclass
class AttnCase:
    attn: str  # a variant name, optionally +fastrpb; "fastrpb" alone times the W V term by itself
    seq_len: int
    mem_len: int = 0
    batch: int = 1
    d_model: int = 256
    n_head: int = 4
    d_head: int = 64
    repeats: int = 3
    device: str = "cpu"
    dtype: str = "float32"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_attn_case(case: AttnCase) -> dict:
    """Forward + backward of one attention layer: median seconds and peak bytes above the inputs."""
    from txl.config import ModelConfig
    from txl.model.cache import LayerCache, Stored
    from txl.model.plans import apply_plans
    from txl.model.transformer import TransformerXL

    torch.manual_seed(0)
    device, dtype = torch.device(case.device), getattr(torch, case.dtype)
    attn = "xl" if case.attn == "fastrpb" else case.attn
    cfg = ModelConfig(
        vocab_size=256,
        n_layer=1,
        d_model=case.d_model,
        n_head=case.n_head,
        d_head=case.d_head,
        d_inner=case.d_model,
        dropout=0.0,
        dropatt=0.0,
    )
    cfg.fastrpb.max_len = max(cfg.fastrpb.max_len, case.seq_len + case.mem_len)
    cfg = apply_plans(cfg, memory=str(case.mem_len), attn=attn)
    model = TransformerXL(cfg).to(device)
    layer = model.layers[0].attn
    rpb = layer.rpb if case.attn == "fastrpb" else None
    if case.attn == "fastrpb":
        from txl.attention.fastrpb import FastRPB

        rpb = FastRPB(cfg).to(device)
    x = torch.randn(case.batch, case.seq_len, case.d_model, device=device, dtype=dtype, requires_grad=True)
    mem = torch.randn(case.batch, case.mem_len, case.d_model, device=device, dtype=dtype) if case.mem_len else None
    klen = case.seq_len + case.mem_len
    v = torch.randn(case.batch, case.n_head, klen, case.d_head, device=device, dtype=dtype, requires_grad=True)
    mems = [LayerCache(recent=None if mem is None else Stored(mem))]  # only its length is read (the context)

    def step() -> None:
        if rpb is not None and case.attn == "fastrpb":
            out = rpb(v, case.seq_len)
        else:
            ctx = model.context(case.seq_len, mems, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out, _ = layer(x, mem, {}, ctx)
        out.float().square().mean().backward()

    seconds, peak = _time_and_peak(step, case.device, case.repeats)
    return {"attn": case.attn, "seq_len": case.seq_len, "seconds": seconds, "peak_bytes": peak}


def _time_and_peak(step, device_name: str, repeats: int) -> tuple[float, int]:
    """Median seconds of `step` over `repeats` calls, and the peak bytes its first call adds (it also warms up)."""
    device = torch.device(device_name)
    sync(device_name)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    step()  # the first call sets the peak (and warms up)
    sync(device_name)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync(device_name)
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(peak, 0)


def _in_fresh_process(case: AttnCase) -> dict:
    # Peak RSS only rises, so on a CPU every case gets a process of its own.
    code = (
        "import json, sys; from txl.bench.attention import AttnCase, run_attn_case; "
        "print(json.dumps(run_attn_case(AttnCase(**json.loads(sys.argv[1])))))"
    )
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(asdict(case))], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["killed"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def variants_benchmark(
    variants: list[str], lengths: list[int], device: str = "cpu", progress: bool = True, **case_kw
) -> list[dict]:
    """Every (variant, length) case; on a GPU in this process, on a CPU each in its own process."""
    rows = []
    cases = [AttnCase(attn=v, seq_len=n, device=device, **case_kw) for n in lengths for v in variants]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cases), desc="txl bench variants", unit="case")
    for case in cases:
        try:
            rows.append(run_attn_case(case) if device.startswith("cuda") else _in_fresh_process(case))
        except (RuntimeError, MemoryError) as e:  # out of memory at the longest lengths
            rows.append(
                {
                    "attn": case.attn,
                    "seq_len": case.seq_len,
                    "seconds": math.nan,
                    "peak_bytes": math.nan,
                    "error": str(e)[:80],
                }
            )
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rows


def variants_table(rows: list[dict], markdown: bool = False, absolute: bool = False) -> str:
    """Time and peak memory relative to xl at the same length, and each variant's growth from the shortest length."""
    lengths = sorted({r["seq_len"] for r in rows})
    names = list(dict.fromkeys(r["attn"] for r in rows))
    at = {(r["attn"], r["seq_len"]): r for r in rows}
    lo, hi = lengths[0], lengths[-1]
    headers = ["variant"]
    headers += [f"time/xl @{n}" for n in lengths] + [f"mem/xl @{n}" for n in lengths]
    headers += [f"time x{hi // lo} len", f"mem x{hi // lo} len"]
    if absolute:
        headers += [f"ms @{n}" for n in lengths] + [f"MiB @{n}" for n in lengths]
    out = []
    for name in names:
        row: list = [name]
        for key in ("seconds", "peak_bytes"):
            for n in lengths:
                base = at.get(("xl", n), {}).get(key, math.nan)
                row.append(at[(name, n)][key] / base if base else math.nan)
        for key in ("seconds", "peak_bytes"):
            first = at[(name, lo)][key]
            row.append(at[(name, hi)][key] / first if first else math.nan)
        if absolute:
            row += [at[(name, n)]["seconds"] * 1e3 for n in lengths]
            row += [at[(name, n)]["peak_bytes"] / 2**20 for n in lengths]
        out.append(row)
    return format_table(headers, out, markdown)


def bench_device(name: str) -> str:
    """auto: cuda where there is one, else cpu; asking for cuda without one is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TxlError("--device cuda asked for, but this machine has no CUDA device; use --device cpu")
    return name
