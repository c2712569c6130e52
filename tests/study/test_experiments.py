"""The experiment registry, running with skip/resume, the results table, and reports."""

import shutil

import pytest
import torch
from conftest import worker_failure

import experiments  # noqa: F401  (registers every definition)
from txl.cli import main
from txl.core.io import read_jsonl
from txl.model.plans import check_run
from txl.model.transformer import TransformerXL
from txl.study.registry import (
    EXPERIMENTS,
    experiment,
    get_experiment,
    list_experiments,
    results_path,
)
from txl.study.sweep import jobs, run_experiment, shard
from txl.train.loop import Trainer

NAMES = [name for name, _ in list_experiments()]


@pytest.mark.parametrize("name", NAMES)
def test_every_experiment_builds_valid_configs_and_trains_a_step(name, tmp_path):
    exp = get_experiment(name, "tiny")
    assert exp.variants and all(v.of is None or v.of in {w.name for w in exp.variants} for v in exp.variants)
    for variant in exp.variants:
        if not (variant.trains or variant.adapts):
            continue
        run = exp.config(variant, exp.seeds[0])
        run.data.root = str(tmp_path / "data")
        check_run(run)
        from txl.data import load_corpus

        corpus = load_corpus(run.data, progress=False)
        run.model.vocab_size = corpus.vocab_size
        model = TransformerXL(run.model)
        seg = next(corpus.stream("train", run.train.batch_size, run.train.tgt_len).epoch(0))
        loss, _ = model(seg.inputs, None, seg.targets)
        loss.mean().backward()
        assert torch.isfinite(loss).all()


@pytest.mark.parametrize("name", NAMES)
def test_paper_and_small_scales_validate(name):
    for scale in ("small", "paper"):
        exp = get_experiment(name, scale)
        for variant in exp.variants:
            if variant.trains or variant.adapts:
                check_run(exp.config(variant, 0))


def test_registry_refuses_duplicates_and_lists_by_pattern():
    with pytest.raises(ValueError, match="registered twice"):
        experiment("quickstart", "again")(lambda scale: None)
    assert [n for n, _ in list_experiments("rae2020/*")] == [n for n in EXPERIMENTS if n.startswith("rae2020/")]


def test_shards_partition_jobs_and_keep_evaluations_with_their_model():
    exp = get_experiment("rae2020/lrm-count", "small")
    exp.seeds = [0, 1]
    everything = jobs(exp)
    parts = [shard(everything, i, 3) for i in range(3)]
    assert sorted(j.key for p in parts for j in p) == sorted(j.key for j in everything)
    for part in parts:
        trained = {(j.variant.name, j.seed) for j in part if j.variant.trains}
        assert all((j.variant.of, j.seed) in trained for j in part if not j.variant.trains)


@pytest.mark.slow
def test_unknown_experiment_and_scale(capsys):
    assert main(["run", "rae2020/nope"]) == 2
    assert "unknown experiment 'rae2020/nope'" in capsys.readouterr().err
    assert main(["list", "zzz*"]) == 2


@pytest.mark.slow
def test_interrupted_sweep_completes_without_redoing_or_duplicating(tmp_path, monkeypatch, messages):
    exp = get_experiment("rae2020/lrm-count", "tiny")
    exp.base.data.root = str(tmp_path / "data")
    exp.base.train.steps, exp.base.train.save_every = 6, 2
    real_fit = Trainer.fit
    state = {"fits": 0}

    def flaky_fit(self, stop_at=None):
        state["fits"] += 1
        if state["fits"] == 2:  # the second training run is interrupted after 3 steps
            real_fit(self, stop_at=3)
            raise KeyboardInterrupt
        return real_fit(self, stop_at)

    monkeypatch.setattr(Trainer, "fit", flaky_fit)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, tmp_path / "results", progress=False)
    rows = read_jsonl(results_path(tmp_path / "results", exp))
    assert [r["variant"] for r in rows] == ["lrm=0"]
    monkeypatch.setattr(Trainer, "fit", real_fit)
    messages.clear()
    rows = run_experiment(exp, tmp_path / "results", progress=False)
    said = messages()
    keys = [(r.variant, r.seed) for r in rows]
    assert len(keys) == len(set(keys)) == len(jobs(exp))
    assert any("lrm=0" in s and "skipped" in s for s in said) and any("lrm=1" in s and "resuming" in s for s in said)
    messages.clear()
    run_experiment(exp, tmp_path / "results", progress=False)
    again = messages()
    assert all("skipped" in s for s in again) and len(read_jsonl(results_path(tmp_path / "results", exp))) == len(keys)


@pytest.mark.slow
def test_reports_render_from_the_results_file_alone(tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "quickstart",
                "--scale",
                "tiny",
                "--results",
                str(tmp_path / "r"),
                "--no-progress",
                "--set",
                f"data.root={tmp_path / 'data'}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "mem 16 (trained)" in out and "pareto" in out
    shutil.rmtree(tmp_path / "r" / "quickstart" / "tiny" / "runs")  # no models needed to report
    for f in ("report.md", "report.png", "report.svg"):
        (tmp_path / "r" / "quickstart" / "tiny" / f).unlink()
    assert main(["report", "quickstart", "--scale", "tiny", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    for f in ("report.md", "report.png", "report.svg"):
        assert (tmp_path / "r" / "quickstart" / "tiny" / f).stat().st_size > 0
    rows = read_jsonl(tmp_path / "r" / "quickstart" / "tiny" / "results.jsonl")
    assert {r["variant"] for r in rows} == {"mem 0", "mem 2", "mem 4", "mem 8", "mem 16 (trained)", "mem 32"}
    assert {r["kind"] for r in rows} == {"train", "eval"}
    assert "*" in out  # a Pareto point
    assert all(" " not in r["run_dir"] and "(" not in r["run_dir"] for r in rows)  # no quoting needed in a shell


@pytest.mark.slow
def test_seeds_train_every_variant_and_the_report_pairs_them(tmp_path, capsys):
    results = tmp_path / "r"
    assert (
        main(
            [
                "run",
                "quickstart",
                "--scale",
                "tiny",
                "--seeds",
                "2",
                "--results",
                str(results),
                "--no-progress",
                "--set",
                f"data.root={tmp_path / 'data'}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = read_jsonl(results / "quickstart" / "tiny" / "results.jsonl")
    assert sorted((r["variant"], r["seed"]) for r in rows if r["kind"] == "train") == [
        ("mem 16 (trained)", 0),
        ("mem 16 (trained)", 1),
    ]
    assert {r["seed"] for r in rows if r["variant"] == "mem 0"} == {0, 1}  # evaluation-time plans on every seed's model
    assert all(len(r["blocks"]["loss"]) == len(r["blocks"]["tokens"]) > 1 for r in rows)
    assert "paired seeds, n=2" in out and "95% interval" in out
    assert main(["run", "quickstart", "--scale", "tiny", "--seeds", "0"]) == 2


@pytest.mark.slow
def test_sparse_memory_lags_plumbing_matches_ground_truth(tmp_path):
    """Small scale on a CPU: plans that cannot see the token an answer depends on stay at chance, the others learn.

    Copy at lag 12 with 8 symbols: chance is 1/8 = 0.125. A plan whose receptive field is
    under 11 cannot see the token; we require it below 0.25 (twice chance). Plans that
    reach it must get above 0.6 (the task is deterministic once the token is visible).
    """
    exp = get_experiment("sparse-memory/lags", "small")
    exp.variants = [v for v in exp.variants if v.name.startswith("lag 12 ")]
    exp.base.data.root = str(tmp_path / "data")
    rows = run_experiment(exp, tmp_path / "results", progress=False)
    for r in rows:
        reach = r.budget["receptive_field"]
        accuracy = r.metrics["accuracy"]
        if reach < 11:
            assert accuracy < 0.25, (r.variant, reach, accuracy)
        else:
            assert accuracy > 0.6, (r.variant, reach, accuracy)
    assert {r.budget["receptive_field"] >= 11 for r in rows} == {True, False}


@pytest.mark.slow
def test_torchrun_sweep_records_each_result_once(tmp_path):
    """Under torchrun every process runs the sweep; training is shared, rows and evaluations are rank 0's."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",
            "-m",
            "txl",
            "run",
            "quickstart",
            "--scale",
            "tiny",
            "--results",
            str(tmp_path / "r"),
            "--device",
            "cpu",
            "--no-progress",
            "--set",
            f"data.root={tmp_path / 'data'}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, worker_failure(proc)
    rows = read_jsonl(tmp_path / "r" / "quickstart" / "tiny" / "results.jsonl")
    assert sorted(r["variant"] for r in rows) == sorted(v.name for v in get_experiment("quickstart", "tiny").variants)
    assert proc.stdout.count("finished in") == 1


@pytest.mark.slow
def test_the_same_experiment_on_two_corpora_gives_two_result_sets(tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text("".join(f"line {i} of another text, not the standard library\n" for i in range(3000)))
    common = [
        "--scale",
        "tiny",
        "--results",
        str(tmp_path / "r"),
        "--no-progress",
        "--set",
        f"data.root={tmp_path / 'data'}",
    ]
    assert main(["run", "quickstart", *common]) == 0
    assert main(["run", "quickstart", *common, "--corpus", str(other)]) == 0
    capsys.readouterr()
    mine = read_jsonl(tmp_path / "r" / "quickstart" / "tiny" / "results.jsonl")
    folders = [p for p in (tmp_path / "r" / "quickstart").iterdir() if p.name.startswith("tiny-on-other.txt-")]
    assert len(folders) == 1
    theirs = read_jsonl(folders[0] / "results.jsonl")
    assert {r["data"]["corpus"] for r in mine} == {"pystdlib"} and {r["data"]["corpus"] for r in theirs} == {
        "other.txt"
    }
    assert len(mine) == len(theirs) == 6 and all(r["data"]["key"] for r in mine + theirs)
    assert (
        main(
            [
                "report",
                "quickstart",
                "--scale",
                "tiny",
                "--results",
                str(tmp_path / "r"),
                "--corpus",
                str(other),
                "--no-plot",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "on other.txt (bytes" in (folders[0] / "report.md").read_text() and out.count("mem 16 (trained)") >= 1


@pytest.mark.slow
def test_variants_are_chosen_on_valid_and_test_is_scored_once_apart(tmp_path, capsys):
    """`txl run` scores valid; `--test` scores every trained model on test without training again, once,
    in rows of their own; each report shows one split and says which."""
    r, data = str(tmp_path / "r"), f"data.root={tmp_path / 'data'}"
    common = ["--scale", "tiny", "--results", r, "--no-progress"]
    assert main(["run", "quickstart", *common, "--set", data]) == 0
    assert main(["report", "quickstart", "--scale", "tiny", "--results", r, "--split", "test"]) == 2
    assert "no test results" in capsys.readouterr().err
    ckpts = sorted((tmp_path / "r" / "quickstart" / "tiny" / "runs").rglob("*.pt"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    assert main(["run", "quickstart", *common, "--set", data, "--test"]) == 0
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps  # nothing trained again
    rows = read_jsonl(tmp_path / "r" / "quickstart" / "tiny" / "results.jsonl")
    by_split = {s: {x["variant"] for x in rows if x["metrics"]["split"] == s} for s in ("valid", "test")}
    assert by_split["valid"] == by_split["test"] and len(rows) == 2 * len(by_split["valid"])
    for v in by_split["valid"]:
        pair = [x for x in rows if x["variant"] == v]
        assert pair[0]["config_hash"] != pair[1]["config_hash"] and pair[0]["plan"] == pair[1]["plan"]
    folder = tmp_path / "r" / "quickstart" / "tiny"
    assert (
        "valid split" in (folder / "report.md").read_text() and "test split" in (folder / "report-test.md").read_text()
    )
    assert "test split" not in (folder / "report.md").read_text()
    capsys.readouterr()
    assert main(["run", "quickstart", *common, "--set", data, "--test"]) == 0
    assert len(read_jsonl(folder / "results.jsonl")) == len(rows)  # scored once
    assert "choose plans and variants on valid" in capsys.readouterr().out


def test_an_evaluation_variants_identity_names_every_plan_dimension_it_sets():
    """Changing a cut's memory dtype, sinks or compression is another result, never one already done."""
    from txl.study.registry import Experiment, Variant
    from txl.study.results import config_hash
    from txl.study.sweep import Job, job_identity
    from txl.train.presets import get_preset

    def digest(**plan):
        exp = Experiment("tiny", get_preset("tiny"), [Variant("t", memory="8"), Variant("e", of="t", **plan)])
        return config_hash(job_identity(exp, Job(exp.variants[1], 0)))

    base = digest(memory="4")
    for plan in (dict(memory_dtype="int8"), dict(sinks="2"), dict(compress="2/2:mean")):
        assert digest(memory="4", **plan) != base, plan
    assert digest(memory="4", compress="2/2:mean") != digest(memory="4", compress="2/4:mean")
