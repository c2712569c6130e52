"""Choosing the fused kernels' launches: what each asks of a GPU, known without one, and its time on one.

Triton compiles a kernel for a named architecture on any machine, down to the GPU's own
machine code with the ptxas it ships. The compiled kernel states its registers per thread,
the bytes per thread it spills to the stack when registers run out, and the shared memory a
block needs, which must fit what the architecture offers or the launch fails. `txl bench
kernel` prints these for the launches `txl.attention.fused` picks, and the tests hold every
launch to them: it compiles, it fits, and the enwik8-base launches spill nothing where
`default_launch` says so.

On a GPU, `txl bench kernel --time` times candidate launches of each kernel at one shape, beside
torch's sdpa given the same scores' position term as a precomputed bias, so a GPU session can
replace a static choice by a measured one.

Compiling happens in a child process: the tests run Triton's interpreter (TRITON_INTERPRET=1),
under which kernels cannot be compiled, only interpreted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from txl.core.errors import TxlError

log = logging.getLogger(__name__)

# compute capability, the most shared memory one block may use (bytes), and the cards
ARCHES = {
    "sm_80": (80, 166912, "A100"),
    "sm_86": (86, 101376, "RTX 30xx, A40, A6000"),
    "sm_89": (89, 101376, "RTX 40xx, L4, L40"),
    "sm_90": (90, 232448, "H100, H200"),
}
KINDS = ("half", "tf32", "fp32")  # operands: bf16/fp16, float32 on tensor cores, float32 exact
_POINTERS = {"QU", "QV", "Kp", "V", "RD", "Op", "DO", "DQU", "DQV", "DK", "DV"}
_FLOAT32_POINTERS = {"LSE", "DELTA", "DRD"}


def _tools() -> tuple[Path, Path]:
    """Triton's bundled ptxas and cuobjdump, or a one-line error saying what to install."""
    try:
        import triton
    except ImportError:
        raise TxlError("the kernel report needs triton: pip install -e '.[gpu]'") from None
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    ptxas, cuobjdump = bin_dir / "ptxas", bin_dir / "cuobjdump"
    if not (ptxas.exists() and cuobjdump.exists()):
        raise TxlError(
            f"triton's CUDA tools are missing from {bin_dir}: reinstall triton (pip install --force-reinstall triton)"
        )
    return ptxas, cuobjdump


def available() -> bool:
    try:
        _tools()
    except TxlError:
        return False
    return True


def _compile_one(spec: dict, cuobjdump: Path) -> dict:
    """Compile one kernel as spec names it; its registers, spilled bytes and shared memory."""
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from txl.attention import fused
    from txl.attention.launches import head_block

    kernel = getattr(fused, "_" + ("fwd" if spec["kernel"] == "fwd" else "bwd_" + spec["kernel"]))
    dtype = {"half": "bf16", "tf32": "fp32", "fp32": "fp32"}[spec["kind"]]
    constants = dict(
        BM=spec["block"],
        BN=spec["block"],
        BD=head_block(spec["d_head"]),
        PREC="tf32" if spec["kind"] == "tf32" else "ieee",
        ATOMIC=True,
    )
    signature, constexprs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constants:
            signature[name] = "constexpr"
            constexprs[(i,)] = constants[name]
        elif name in _POINTERS:
            signature[name] = "*" + dtype
        else:
            signature[name] = {"VISITS": "*i32", "scale": "fp32"}.get(
                name, "*fp32" if name in _FLOAT32_POINTERS else "i32"
            )
    capability = ARCHES[spec["arch"]][0]
    compiled = triton.compile(
        ASTSource(kernel, signature, constexprs=constexprs),
        target=GPUTarget("cuda", capability, 32),
        options=dict(num_warps=spec["warps"], num_stages=spec["stages"]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run(
            [str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True, check=True
        ).stdout
    ptx = compiled.asm["ptx"]
    return dict(
        spec,
        registers=int(re.search(r"REG:(\d+)", usage).group(1)),
        spilled=int(re.search(r"STACK:(\d+)", usage).group(1)),
        shared=int(compiled.metadata.shared),
        warpgroup_mma="wgmma.mma_async" in ptx,
        atomics=len(re.findall(r"\bred\.global", ptx)),
    )


def compile_kernels(specs: list[dict]) -> list[dict]:
    """Compile each spec (kernel, kind, arch, block, warps, stages, d_head) in a child process
    without the interpreter."""
    _tools()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "txl.attention.fused_launch"],
        input=json.dumps(specs),
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TxlError(f"compiling the fused kernels failed: {last}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def launch_specs(arches: list[str], kinds: list[str], d_head: int, qlen: int) -> list[dict]:
    """The launches txl.attention.fused picks for these architectures, operand kinds, head dim and segment length."""
    from txl.attention.launches import KERNELS, launch_for

    specs = []
    for arch in arches:
        if arch not in ARCHES:
            raise TxlError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHES)}")
        for kind in kinds:
            for kernel in KERNELS:
                launch = launch_for(kernel, kind, ARCHES[arch][0], qlen, d_head)
                specs.append(dict(kernel=kernel, kind=kind, arch=arch, d_head=d_head, **launch._asdict()))
    return specs


def fits(row: dict) -> bool:
    return row["shared"] <= ARCHES[row["arch"]][1]


def resource_table(rows: list[dict], markdown: bool = False) -> str:
    from txl.core.table import format_table

    headers = [
        "arch",
        "operands",
        "kernel",
        "block",
        "warps",
        "stages",
        "registers",
        "spilled B/thread",
        "shared KiB",
        "fits",
        "wgmma",
    ]
    body = [
        [
            r["arch"],
            r["kind"],
            r["kernel"],
            r["block"],
            r["warps"],
            r["stages"],
            r["registers"],
            r["spilled"],
            f"{r['shared'] / 1024:.0f} of {ARCHES[r['arch']][1] / 1024:.0f}",
            "yes" if fits(r) else "NO",
            "yes" if r["warpgroup_mma"] else "-",
        ]
        for r in rows
    ]
    return format_table(headers, body, markdown=markdown)


CANDIDATES = [(block, warps, stages) for block in (32, 64) for warps in (4, 8) for stages in (1, 2, 3)]


def _timer(device):
    """A function that times fn() in milliseconds on `device` (a torch.device): CUDA events on a GPU, else the clock."""
    import time

    import torch

    def elapsed(fn) -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return elapsed


def time_launches(
    batch: int,
    heads: int,
    qlen: int,
    mlen: int,
    d_head: int,
    dtype,
    device,
    candidates=None,
    repeats: int = 10,
) -> list[dict]:
    """Forward and backward milliseconds at one shape: sdpa given the position term as a bias (the baseline), the
    fused kernel's default launches, then each candidate launch of each kernel (the others default), on the same
    inputs; max_diff is each output's largest difference from the baseline's."""
    import statistics

    import torch
    import torch.nn.functional as F

    from txl.attention.fused_op import fused_attention
    from txl.attention.launches import KERNELS, Launch

    klen = qlen + mlen
    qu, qv, k, v, rd, grad = _timing_inputs(batch, heads, qlen, klen, d_head, dtype, device)
    scale, elapsed = d_head**-0.5, _timer(device)

    def measure(forward) -> tuple[float, float, torch.Tensor]:
        fwd, bwd = [], []
        for i in range(repeats + 1):  # the first call compiles
            out = [None]
            f = elapsed(lambda out=out: out.__setitem__(0, forward()))
            b = elapsed(lambda out=out: torch.autograd.grad(out[0], (qu, qv, k, v, rd), grad))
            if i:
                fwd.append(f)
                bwd.append(b)
        return statistics.median(fwd), statistics.median(bwd), out[0].detach().float()

    def sdpa():
        dist = mlen + torch.arange(qlen, device=device)[:, None] - torch.arange(klen, device=device)[None, :]
        position = (qv @ rd.transpose(-1, -2)).gather(-1, dist.clamp(0, klen - 1).expand(batch, heads, qlen, klen))
        bias = (position * scale).masked_fill(dist < 0, float("-inf"))
        return F.scaled_dot_product_attention(qu, k, v, attn_mask=bias, scale=scale)

    def fused(kernel=None, launch=None):
        return lambda: fused_attention(
            qu, qv, k, v, rd, float("inf"), scale, launches={kernel: launch} if kernel else None
        )

    cases = [("sdpa (bias)", None, None, sdpa), ("fused", None, None, fused())]
    for kernel in KERNELS:
        for cand in candidates if candidates is not None else CANDIDATES:
            cases.append((f"fused {kernel}", kernel, Launch(*cand), fused(kernel, Launch(*cand))))
    return _run_cases(cases, measure)


def _timing_inputs(batch: int, heads: int, qlen: int, klen: int, d_head: int, dtype, device) -> tuple:
    """qu, qv, k, v, rd (requiring gradients) and an output gradient, the same for every case (seeded)."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    make = lambda *shape: torch.randn(*shape, generator=gen).to(device, dtype).requires_grad_()  # noqa: E731
    queries = [make(batch, heads, qlen, d_head) for _ in range(2)]
    keys = [make(batch, heads, klen, d_head) for _ in range(2)]
    rd = make(heads, klen, d_head)
    return (*queries, *keys, rd, torch.randn(batch, heads, qlen, d_head, generator=gen).to(device, dtype))


def _run_cases(cases: list, measure) -> list[dict]:
    """One row per case: its times and its output's largest difference from the first case's."""
    rows, want = [], None
    for n, (name, kernel, launch, run) in enumerate(cases, 1):
        try:
            fwd, bwd, out = measure(run)
            want = out if want is None else want
            rows.append(
                dict(
                    case=name,
                    kernel=kernel,
                    launch=launch and launch._asdict(),
                    fwd_ms=fwd,
                    bwd_ms=bwd,
                    max_diff=float((out - want).abs().max()),
                )
            )
        except Exception as exc:  # a launch that does not fit this GPU (shared memory) is a row, not a crash
            rows.append(
                dict(case=name, kernel=kernel, launch=launch and launch._asdict(), error=str(exc).splitlines()[0][:120])
            )
        log.info(f"[{n}/{len(cases)}] {name} {tuple(launch) if launch else ''}")
    return rows


def time_table(rows: list[dict], markdown: bool = False) -> str:
    from txl.core.table import format_table

    base = next(r for r in rows if r["case"] == "sdpa (bias)" and "error" not in r)
    total = base["fwd_ms"] + base["bwd_ms"]
    body = []
    for r in rows:
        launch = r["launch"] and f"{r['launch']['block']}/{r['launch']['warps']}/{r['launch']['stages']}"
        if "error" in r:
            body.append([r["case"], launch or "default", "-", "-", "-", r["error"]])  # e.g. too much shared memory
            continue
        body.append(
            [
                r["case"],
                launch or "default",
                f"{r['fwd_ms']:.3f}",
                f"{r['bwd_ms']:.3f}",
                f"{total / (r['fwd_ms'] + r['bwd_ms']):.2f}x",
                f"{r['max_diff']:.1e}",
            ]
        )
    return format_table(
        ["case", "block/warps/stages", "forward ms", "backward ms", "speed vs sdpa", "max |diff|"],
        body,
        markdown=markdown,
    )


def main() -> None:  # the child process: specs as JSON on stdin, one JSON row per line on stdout
    _, cuobjdump = _tools()
    for spec in json.loads(sys.stdin.read()):
        print(json.dumps(_compile_one(spec, cuobjdump)), flush=True)


if __name__ == "__main__":
    main()
