"""The fused kernels' launches, compiled for real GPU architectures on this machine (Triton's ptxas, no GPU).

A launch that needs more shared memory than an architecture offers fails on that GPU at run time,
and a kernel whose registers run out spills to memory on every step; both are known at compile time.
"""

import logging

import pytest
import torch

triton = pytest.importorskip("triton")
from txl.attention import fused_launch  # noqa: E402
from txl.attention.launches import KERNELS, Launch, default_launch, launch_for  # noqa: E402
from txl.core.errors import TxlError  # noqa: E402

needs_tools = pytest.mark.skipif(
    not fused_launch.available(), reason="triton's CUDA tools (ptxas, cuobjdump) are missing"
)


@pytest.mark.slow
@needs_tools
def test_every_launch_compiles_and_fits_each_architecture():
    """Every launch the kernel picks at d_head 64 compiles for an H100, an A100 and an RTX 30xx (the least shared
    memory), for every operand kind; at enwik8 base (bf16 on an H100) the forward and dkdv kernels spill nothing
    and all three use Hopper's warpgroup products."""
    specs = fused_launch.launch_specs(["sm_90", "sm_86"], list(fused_launch.KINDS), 64, 512)
    specs += fused_launch.launch_specs(["sm_80"], ["half"], 64, 512)
    rows = fused_launch.compile_kernels(specs)
    assert len(rows) == len(specs) == 21
    too_big = [(r["arch"], r["kind"], r["kernel"], r["shared"]) for r in rows if not fused_launch.fits(r)]
    assert not too_big
    base = {r["kernel"]: r for r in rows if (r["arch"], r["kind"]) == ("sm_90", "half")}
    assert (base["fwd"]["spilled"], base["dkdv"]["spilled"]) == (0, 0)
    assert all(r["warpgroup_mma"] for r in base.values())
    assert base["dq"]["atomics"] > 0 and base["fwd"]["atomics"] == 0  # the position gradient's adds, in dq alone
    table = fused_launch.resource_table(rows)
    assert "sm_86" in table and "NO" not in table


@needs_tools
def test_a_launch_too_big_for_an_architecture_is_reported_as_not_fitting():
    """The check can fail: 64-blocks of exact float32 with three stages overflow an RTX 30xx's 99 KiB."""
    spec = dict(kernel="fwd", kind="tf32", arch="sm_86", d_head=64, block=64, warps=8, stages=3)
    (row,) = fused_launch.compile_kernels([spec])
    assert row["shared"] > fused_launch.ARCHES["sm_86"][1] and not fused_launch.fits(row)
    assert "NO" in fused_launch.resource_table([row])


def test_launches_shrink_for_short_segments_and_wide_heads():
    assert launch_for("fwd", "half", 90, 512, 64) == default_launch("fwd", "half", 90) == Launch(64, 8, 2)
    assert launch_for("fwd", "half", 90, 20, 64).block == 32
    assert launch_for("dq", "half", 90, 8, 64) == Launch(16, 4, 2)
    assert launch_for("dkdv", "half", 90, 512, 128) == Launch(32, 8, 1)
    assert launch_for("fwd", "half", 80, 512, 64).block == 32  # no warpgroup products before sm_90
    for kind in fused_launch.KINDS:
        for kernel in KERNELS:
            launch = launch_for(kernel, kind, 90, 512, 64)
            assert launch.block in (16, 32, 64) and launch.block & (launch.block - 1) == 0


def test_unknown_architecture_is_one_line():
    with pytest.raises(TxlError, match="unknown architecture 'sm_99'"):
        fused_launch.launch_specs(["sm_99"], ["half"], 64, 512)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's run; on a GPU gpu_session.sh times it")
def test_timing_candidates_runs_every_case_and_states_each_against_sdpa(monkeypatch, caplog):
    """On a CPU the kernels run in Triton's interpreter, so the times mean nothing; what is checked is that every
    candidate of every kernel is run, that a candidate overriding one kernel gives the same output, and the table."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    caplog.set_level(logging.INFO, logger="txl")
    rows = fused_launch.time_launches(
        1,
        1,
        20,
        12,
        16,
        torch.float32,
        torch.device("cpu"),
        candidates=[(16, 4, 1), (32, 4, 2)],
        repeats=1,
    )
    lines = [r for r in caplog.records if r.name == "txl.attention.fused_launch"]
    assert [r["case"] for r in rows] == ["sdpa (bias)", "fused"] + [f"fused {k}" for k in KERNELS for _ in range(2)]
    assert all(r["fwd_ms"] > 0 and r["bwd_ms"] > 0 for r in rows) and len(lines) == len(rows)
    table = fused_launch.time_table(rows)
    assert "speed vs sdpa" in table and "16/4/1" in table and "1.00x" in table.splitlines()[2]
    assert rows[0]["max_diff"] == 0 and all(r["max_diff"] < 1e-5 for r in rows[1:])  # every launch computes the same


def test_bench_kernel_refuses_bad_input_in_one_line(capsys):
    from txl.cli import main

    assert main(["bench", "kernel", "--arch", "sm_99"]) == 2
    assert main(["bench", "kernel", "--operands", "half,fp8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "txl bench: error: unknown architecture 'sm_99': use one of sm_80, sm_86, sm_89, sm_90",
        "txl bench: error: unknown operands 'fp8': use half, tf32 or fp32",
    ]


@needs_tools
def test_bench_kernel_prints_the_table(capsys, tmp_path):
    from txl.cli import main

    assert main(["bench", "kernel", "--arch", "sm_90", "--operands", "half", "--out", str(tmp_path / "k.json")]) == 0
    out = capsys.readouterr().out
    assert "spilled B/thread" in out and out.count("sm_90") == 3
    assert (tmp_path / "k.json").exists()
