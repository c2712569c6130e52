"""The benchmark commands run and report; their figures are measurements, not test assertions."""

import json

import pytest

from txl.cli import main


def test_bench_train_compares_plain_and_fast_paths(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert (
        main(
            [
                "bench",
                "train",
                "--preset",
                "tiny",
                "--compare",
                "--memory",
                "16",
                "--memory",
                "lrm=1@last:16,srm=4",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--eval-steps",
                "2",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "x plain 16" in text and "tokens/s" in text
    data = json.loads(out.read_text())
    assert [r["impl"] for r in data["rows"]] == ["plain", "plain", "plain", "plain"]  # auto is plain on a CPU
    assert [r["memory"] for r in data["rows"]] == ["2x16", "2x16", "1x4,1x16", "1x4,1x16"]
    assert all(r["tokens_per_s"] > 0 and r["eval_tokens_per_s"] > 0 and r["mfu"] is None for r in data["rows"])
    assert data["rows"][0]["flops_per_token"] > data["rows"][2]["flops_per_token"]  # shorter memory, fewer FLOPs


def test_bench_variants_reports_ratios_to_xl(tmp_path, capsys):
    out = tmp_path / "variants.json"
    assert (
        main(
            [
                "bench",
                "variants",
                "--variants",
                "xl,sikf",
                "--lengths",
                "16,32",
                "--d-model",
                "32",
                "--n-head",
                "2",
                "--d-head",
                "16",
                "--repeats",
                "1",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    xl_row = next(line for line in text.splitlines() if line.startswith("xl "))
    assert xl_row.split()[1:3] == ["1.000", "1.000"]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["attn"], r["seq_len"]) for r in rows} == {("xl", 16), ("xl", 32), ("sikf", 16), ("sikf", 32)}
    assert all(r["seconds"] > 0 for r in rows)


def test_bench_rejects_unknown_names(capsys):
    assert main(["bench", "variants", "--variants", "xl,zzz"]) == 2
    assert "unknown attention variant 'zzz'" in capsys.readouterr().err
    assert main(["bench", "train", "--preset", "tiny", "--impl", "turbo"]) == 2
    assert "unknown --impl 'turbo'" in capsys.readouterr().err


def test_bench_train_profiles_each_case_when_asked(tmp_path, capsys):
    assert (
        main(
            [
                "bench",
                "train",
                "--preset",
                "tiny",
                "--impl",
                "plain,sdpa",
                "--steps",
                "1",
                "--warmup",
                "1",
                "--eval-steps",
                "1",
                "--device",
                "cpu",
                "--profile",
                str(tmp_path / "prof"),
                "--out",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.count("profile ") == 2
    for case in ("plain", "sdpa"):
        table = (tmp_path / "prof" / f"profile-{case}.txt").read_text()
        assert "aten::" in table and "Self CPU" in table
        assert (tmp_path / "prof" / f"profile-{case}.json").stat().st_size > 0
    rows = __import__("json").loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["profile"] for r in rows] == [str(tmp_path / "prof" / f"profile-{c}.txt") for c in ("plain", "sdpa")]


def test_an_impl_that_cannot_run_here_is_refused_before_anything_is_measured(capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert main(["bench", "train", "--preset", "tiny", "--impl", "plain,fused", "--device", "cpu", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "fused needs triton and a GPU" in err and "measuring" not in err


def test_saved_activations_count_grows_linearly_and_the_fused_path_keeps_less():
    """benchmarks/saved_activations.py extrapolates from two batch sizes: what it counts must be linear in the batch,
    and the fused path (its kernel run here, in the interpreter) must keep less than the plain one,
    which keeps the probabilities."""
    import importlib.util
    from pathlib import Path

    import torch
    from conftest import tiny_config

    from txl.model.transformer import TransformerXL

    path = Path(__file__).parents[2] / "benchmarks" / "saved_activations.py"
    spec = importlib.util.spec_from_file_location("saved_activations", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    counts = {}
    for impl in ("plain", "fused"):
        torch.manual_seed(0)
        model = TransformerXL(tiny_config(n_layer=2, n_head=2, d_head=16, memory="64", attn_impl=impl)).train()
        counts[impl] = [mod.kept(model, b, 64, torch.bfloat16)[0] for b in (1, 2, 3)]
    for a, b, c in counts.values():
        assert b - a > 0 and abs((c - b) - (b - a)) < 0.01 * (b - a)
    assert counts["fused"][1] - counts["fused"][0] < 0.8 * (counts["plain"][1] - counts["plain"][0])


def test_bench_train_times_the_trainers_step_and_says_what_stands_in(capsys):
    import importlib.util

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed: lamb itself runs")
    assert (
        main(
            [
                "bench",
                "train",
                "--preset",
                "tiny",
                "--impl",
                "plain",
                "--steps",
                "1",
                "--warmup",
                "0",
                "--device",
                "cpu",
                "--set",
                "train.optimizer=lamb",
                "--set",
                "train.grad_accum=2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "the trainer's step (clipping, adam)" in out and "adam stands in for lamb" in out
    assert "not train.grad_accum=2" in out
