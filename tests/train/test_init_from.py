"""Starting a run from another run's weights (txl train --init-from), and experiment variants adapted to a plan."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_run

from txl.cli import main
from txl.evaluation.evaluate import evaluate
from txl.study.registry import Experiment, Variant
from txl.study.sweep import jobs, run_experiment
from txl.train.checkpoint import find_checkpoint
from txl.train.loop import Trainer
from txl.train.runs import load_trained


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny trained run (memory 16), and where its data is cached."""
    tmp = tmp_path_factory.mktemp("source")
    run = tiny_run(tmp, **{"train.steps": 4})
    Trainer(run, tmp / "run", progress=False).fit()
    return tmp


def _loss(path, **flags) -> float:
    trained = load_trained(path, "cpu")
    spec = trained.spec(whole_split=True, **flags)
    return evaluate(trained.model, trained.corpus(spec), spec, spec.plan).loss


def test_zero_steps_from_a_run_under_its_own_plan_scores_exactly_the_source(source, tmp_path, capsys):
    assert main(["train", "--init-from", str(source / "run"), "--run-dir", str(tmp_path / "b"), "--steps", "0"]) == 0
    assert _loss(tmp_path / "b") == _loss(source / "run")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["train"]["init_from"] == str(find_checkpoint(source / "run").resolve())
    assert config["data"]["tokenizer"] == str((source / "run" / "tokenizer" / "vocab.json").resolve())
    assert config["model"] == json.loads((source / "run" / "config.json").read_text())["model"]


def test_a_run_started_from_another_trains_its_own_plan_on_other_text_with_a_fresh_optimizer(source, tmp_path):
    text = tmp_path / "other.txt"
    text.write_text("def f(x):\n    return x + 1\n" * 400)
    argv = ["train", "--init-from", str(source / "run"), "--run-dir", str(tmp_path / "b"), "--steps", "2"]
    flags = ["--memory", "4", "--sinks", "2", "--corpus", str(text), "--set", "train.seed=7", "--no-progress"]
    assert main([*argv, *flags]) == 0
    b = load_trained(tmp_path / "b", "cpu")
    a = load_trained(source / "run", "cpu")
    assert b.run.model.mem_lens == [4, 4] and [layer.sinks for layer in b.run.model.layers] == [2, 2]
    assert b.run.data.corpus == str(text) and b.run.train.steps == 2
    moved = [(pa - pb).abs().max().item() for pa, pb in zip(a.model.parameters(), b.model.parameters())]
    assert 0 < max(moved) < 0.02  # trained on from the source's weights, not from a fresh start (another seed)
    state = torch.load(find_checkpoint(tmp_path / "b") / "state.pt", weights_only=True)
    assert state["step"] == 2  # its own count: the source's 4 steps and optimizer are not carried


def test_init_from_refuses_what_cannot_start_in_one_line(source, tmp_path, capsys):
    src = str(source / "run")
    cases = [
        (["--init-from", src, "--layers", "3"], "--init-from: checkpoint"),
        (["--init-from", src, "--resume"], "drop --init-from"),
        (["--init-from", src, "--preset", "tiny"], "not --preset or --config"),
        (["--init-from", str(tmp_path / "nothing")], "no checkpoint there"),
        (["--preset", "tiny", "--steps", "0"], "train.steps must be >= 1 (0 only with train.init_from)"),
    ]
    for i, (flags, message) in enumerate(cases):
        capsys.readouterr()
        assert main(["train", "--run-dir", str(tmp_path / f"r{i}"), *flags, "--no-progress"]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / f"r{i}" / "checkpoints").exists()


def test_adapted_variants_train_from_their_sources_model(tmp_path, messages):
    run = tiny_run(tmp_path, **{"train.steps": 3})
    trained = "long (trained)"
    exp = Experiment(
        "tiny",
        run,
        [
            Variant(trained, memory="16"),
            Variant("long, adapted 0 steps", of=trained, adapt_steps=0),
            Variant("4 + 2 sinks, adapted", of=trained, memory="4", sinks="2", adapt_steps=2),
            Variant("4 + 2 sinks", of=trained, memory="4", sinks="2"),
        ],
        name="test/adapt",
    )
    assert [j.variant.name for j in jobs(exp)] == [v.name for v in exp.variants]
    rows = {r.variant: r for r in run_experiment(exp, tmp_path / "results", progress=False)}
    assert [rows[v.name].kind for v in exp.variants] == ["train", "adapt", "adapt", "eval"]
    assert rows["long, adapted 0 steps"].metrics["loss"] == rows[trained].metrics["loss"]
    adapted = load_trained(rows["4 + 2 sinks, adapted"].run_dir, "cpu").run
    assert adapted.train.init_from == str(find_checkpoint(rows[trained].run_dir).resolve())
    # a fine-tune: a tenth of the source's learning rate, decayed over its steps, any warm-up within a tenth of them
    assert adapted.train.lr == pytest.approx(run.train.lr / 10) and adapted.train.warmup <= 2 // 10
    assert adapted.train.steps == 2 and adapted.model.mem_lens == [4, 4] and adapted.model.layers[0].sinks == 2
    assert rows["4 + 2 sinks, adapted"].plan == rows["4 + 2 sinks"].plan
    messages.clear()
    run_experiment(exp, tmp_path / "results", progress=False)
    assert sum("skipped" in m for m in messages()) == 4
    test_rows = [
        r for r in run_experiment(exp, tmp_path / "results", progress=False, split="test") if r.split == "test"
    ]
    assert {r.variant: r.kind for r in test_rows}["4 + 2 sinks, adapted"] == "adapt"


def test_init_from_adapts_with_the_experiments_recipe_and_says_so(source, tmp_path, capsys):
    src = json.loads((source / "run" / "config.json").read_text())["train"]
    out = tmp_path / "a"
    common = ["train", "--init-from", str(source / "run"), "--no-progress", "--memory", "4"]
    assert main([*common, "--run-dir", str(out), "--steps", "20"]) == 0
    err = capsys.readouterr().err
    tc = json.loads((out / "config.json").read_text())["train"]
    assert tc["lr"] == pytest.approx(src["lr"] / 10) and tc["min_lr"] <= tc["lr"] and tc["warmup"] <= 2
    assert f"lr {tc['lr']:g} (its own was {src['lr']:g})" in err and "--lr" in err
    # the flags win over the recipe; a warm-up as long as the run is named
    assert main([*common, "--run-dir", str(tmp_path / "b"), "--steps", "6", "--lr", "0.002"]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["lr"] == 0.002
    capsys.readouterr()
    assert main([*common, "--run-dir", str(tmp_path / "c"), "--steps", "3", "--set", "train.warmup=5"]) == 0
    assert "train.warmup (5 steps) is as long as the run (3)" in capsys.readouterr().err


def test_a_learned_compression_the_source_lacks_starts_fresh_and_the_rest_is_the_source(source, tmp_path, capsys):
    argv = ["train", "--init-from", str(source / "run"), "--run-dir", str(tmp_path / "b"), "--steps", "0"]
    assert main([*argv, "--memory", "4", "--compress", "4/2:conv", "--no-progress"]) == 0
    assert "compressor tensors the source lacks start fresh" in capsys.readouterr().err
    a = load_trained(source / "run", "cpu").model.state_dict()
    b = load_trained(tmp_path / "b", "cpu").model.state_dict()
    fresh = sorted(k for k in b if k not in a)
    assert fresh and all(".compressor." in k for k in fresh)
    assert all(torch.equal(a[k], b[k]) for k in a)  # every weight the source has is the source's
