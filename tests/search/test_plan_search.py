"""txl plan: the search's pieces against brute force, and the whole on a copy task whose answer lies at a known lag."""

import itertools
import json
import random
import re
import shlex

import pytest

import experiments  # noqa: F401  (registers every definition)
from txl.cli import main
from txl.config import ModelConfig
from txl.model.budget import budget
from txl.model.plans import MemoryPlan, apply_plans
from txl.search.choices import option
from txl.search.search import k_best, layer_costs, reference_plans


def test_k_best_is_the_k_best_of_every_plan_within_the_budget():
    rng = random.Random(0)
    for trial in range(20):
        n, grid = rng.randint(1, 4), sorted(rng.sample(range(0, 40), rng.randint(1, 4)))
        rise = [{v: rng.uniform(-0.1, 1.0) for v in grid} for _ in range(n)]
        costs = [{v: float(v * rng.choice([1, 2])) for v in grid} for _ in range(n)]
        limit = rng.uniform(0, 40 * n)
        every = sorted(
            (sum(rise[i][v] for i, v in enumerate(p)), list(p))
            for p in itertools.product(grid, repeat=n)
            if sum(costs[i][v] for i, v in enumerate(p)) <= limit
        )
        got = k_best(rise, costs, limit, 5)
        assert [round(r, 12) for r, _ in got] == [round(r, 12) for r, _ in every[:5]], trial
        assert all(sum(costs[i][v] for i, v in enumerate(p)) <= limit for _, p in got)


def test_costs_add_up_to_the_budget_of_the_plan_in_either_unit():
    cfg = apply_plans(ModelConfig(vocab_size=32, n_layer=3, d_model=24, n_head=2, d_head=12, d_inner=48), memory="8")
    for unit in ("positions", "mib"):
        costs = layer_costs(cfg, [0, 4, 16], 8, unit)
        plan = [16, 0, 4]
        b = budget(MemoryPlan.of_lists("p", plan).apply(cfg), 8)
        want = b.cached_positions if unit == "positions" else b.bytes / 2**20
        assert sum(costs[i][option(v)] for i, v in enumerate(plan)) == pytest.approx(want)
    # a layer's option is a length and a storage: costs in bytes are the budget's for those per-layer dtypes
    options = [option((16, "int4")), option((0, "fp32")), option((4, "int8"))]
    costs = layer_costs(cfg, sorted(set(options) | {option((16, "fp32"))}, key=str), 8, "mib")
    cfg_q = MemoryPlan.parse(3, memory="16,0,4", memory_dtype="int4,fp32,int8").apply(cfg)
    assert sum(costs[i][o] for i, o in enumerate(options)) == pytest.approx(budget(cfg_q, 8).bytes / 2**20)
    assert costs[0][option((16, "int4"))] < costs[0][option((16, "fp32"))] / 4


def test_reference_plans_are_the_most_long_layers_that_fit():
    fits = lambda lens: sum(lens) <= 64 + 5 * 8  # noqa: E731  (the cost of one long layer of six)
    plans = dict(reference_plans(6, 64, 8, fits))
    assert set(plans) == {"lrm=1@first", "lrm=1@interleave", "lrm=1@last"}
    assert plans["lrm=1@first"] == [64] + [8] * 5 and plans["lrm=1@last"] == [8] * 5 + [64]
    assert reference_plans(6, 64, 8, lambda lens: sum(lens) <= 47) == []  # not even all-short fits
    assert [name for name, _ in reference_plans(6, 64, 8, lambda lens: sum(lens) <= 48)] == ["lrm=0"]


@pytest.mark.slow
def test_on_a_copy_task_the_analysis_and_the_search_find_the_lag(tmp_path, capsys):
    """A copy task answers from the token 12 back. A 2-layer model whose top layer alone has memory learns it;
    its top layer's attention mass sits in the distance bucket holding 12, and the plan search at a budget of
    12 positions (just enough to reach 12) finds a plan that reaches it. Every plan searched is within the
    budget and valid, and the best plan's loss is what `txl eval` gives for it."""
    from experiments.sparse_memory import copy_base
    from txl.model.plans import check_run
    from txl.train.loop import Trainer

    run = copy_base("tiny")
    run.data.root = str(tmp_path / "data")
    run.data.synthetic.lags = [12]
    run.model = apply_plans(run.model, memory="0,16")
    check_run(run)
    result = Trainer(run, tmp_path / "run", progress=False).fit()
    assert result["final"]["accuracy"] > 0.9  # it learned the task
    folder = str(tmp_path / "run")
    assert main(["analyze", "attention", folder, "--max-segments", "10"]) == 0
    mass = json.loads((tmp_path / "run" / "analysis" / "attention.json").read_text())
    edges = [e if e is not None else float("inf") for e in mass["edges"]]
    top = [sum(head[b] for head in mass["mass"][1]) / len(mass["mass"][1]) for b in range(len(edges) - 1)]
    peak = max(range(len(top)), key=top.__getitem__)
    assert edges[peak] <= 12 < edges[peak + 1] and top[peak] > 0.5, (edges, top)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    assert "analysis/attention" in events.Tags()["images"]  # the heat map beside the training curves

    capsys.readouterr()
    assert (
        main(["plan", folder, "--budget", "12", "--lengths", "0,4,8,12,16", "--max-segments", "10", "--no-progress"])
        == 0
    )
    record = json.loads((tmp_path / "run" / "analysis" / "plan-12.json").read_text())
    best = record["plans"][0]
    assert best["within_budget"] and best["receptive_field"] >= 12 and best["mem_lens"] == [0, 12]
    for p in record["plans"]:
        b = budget(MemoryPlan.of_lists("p", p["mem_lens"]).apply(run.model), run.eval.tgt_len)
        assert p["cost"] == b.cached_positions and p["receptive_field"] == b.receptive_field[0]
        assert p["within_budget"] == (p["cost"] <= 12)
        assert (
            p["how"] in ("as trained", "sensitivity") or p["within_budget"]
        )  # only the start and its cuts may exceed it
    capsys.readouterr()
    assert main(["eval", folder, "--memory", best["memory"], "--max-segments", "10", "--json", "--no-progress"]) == 0
    same = json.loads(capsys.readouterr().out)["results"][0]
    assert same["loss"] == pytest.approx(best["metrics"]["loss"], rel=1e-12)  # the whole split, as txl eval scores it
    # the search chose on the first half of the text; its table compares on the second half it never looked at
    halves = [same["blocks"]["loss"][: len(same["blocks"]["loss"]) // 2], same["blocks"]["tokens"]]
    first = sum(halves[0]) / sum(same["blocks"]["tokens"][: len(halves[0])])
    assert best["chosen_on"] == "first half" and best["loss"] == pytest.approx(first, rel=1e-9)
    assert best["held_out_loss"] != pytest.approx(best["loss"], rel=1e-9)
    assert (
        main(
            [
                "plan",
                folder,
                "--budget",
                "12",
                "--no-progress",
                "--append",
                "sparse-memory/lags",
                "--scale",
                "tiny",
                "--results",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "is not a model of sparse-memory/lags (tiny)" in capsys.readouterr().err  # only an experiment's own models
    assert main(["plan", folder, "--budget-of", "0,12", "--lengths", "0,4,8,12,16", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "best plan  1x0,1x12" in out  # a plan's cost as the budget: the same search
    check = next(line for line in out.splitlines() if line.startswith("check it"))  # what it tells the user to run
    assert main(shlex.split(check.removeprefix("check it").strip())[1:] + ["--json", "--no-progress"]) == 0
    searched = json.loads((tmp_path / "run" / "analysis" / "plan-12.json").read_text())["plans"][0]
    assert json.loads(capsys.readouterr().out)["results"][0]["loss"] == pytest.approx(
        searched["metrics"]["loss"], rel=1e-12
    )
    assert main(["plan", folder, "--budget", "3", "--lengths", "4,8", "--max-segments", "10", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "below the cheapest plan on the grid (8: every layer at 4)" in err and "\n" not in err.strip()
    # where a searched choice is what costs, the message says so (not 'every layer at 0')
    flags = ["--lengths", "0,4", "--sinks-grid", "2", "--max-segments", "10", "--no-progress"]
    assert main(["plan", folder, "--budget", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert "every layer at 0, sinks 2" in err and "--sinks-grid" in err and "\n" not in err.strip()


@pytest.mark.slow
def test_the_plan_search_experiment_chooses_on_valid_and_scores_test_once(tmp_path, capsys):
    common = [
        "--scale",
        "tiny",
        "--results",
        str(tmp_path / "r"),
        "--no-progress",
        "--set",
        f"data.root={tmp_path / 'data'}",
    ]
    assert main(["run", "analysis/plan-search", *common]) == 0
    folder = tmp_path / "r" / "analysis" / "plan-search" / "tiny"
    (run,) = (folder / "runs" / "all-long").glob("seed0-*")  # the model's own folder, keyed by its configuration
    analysis = run / "analysis"
    for f in ("attention.png", "context.png", "sensitivity.png", "plan-20.png", "plan-20.json"):
        assert (analysis / f).stat().st_size > 0, f
    assert main(["run", "analysis/plan-search", *common, "--test"]) == 0
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    searched = [r for r in rows if r["variant"] == "searched (budget 20)"]
    assert sorted(r["metrics"]["split"] for r in searched) == ["test", "valid"]
    assert searched[0]["plan"] == searched[1]["plan"] and searched[0]["budget"]["cached_positions"] <= 20
    references = [r for r in rows if r["variant"].startswith("lrm=")]
    assert references and all(
        r["budget"]["cached_positions"] == 20 for r in references
    )  # the budget's own long and short
    # like with like: seed 0's chosen plan trained from scratch and adapted from the all-long model, each scored
    # on valid and, once, on test, beside Rae & Razavi's plans trained
    for name, kind in (("searched (budget 20), trained", "train"), ("searched (budget 20), adapted", "adapt")):
        ours = [r for r in rows if r["variant"] == name]
        assert sorted(r["metrics"]["split"] for r in ours) == ["test", "valid"] and ours[0]["kind"] == kind, name
        assert ours[0]["plan"]["memory"] == searched[0]["plan"]["memory"], name
    assert {r["kind"] for r in references if r["variant"].endswith("(trained)")} == {"train"}
    best = json.loads((analysis / "plan-20.json").read_text())["plans"][0]
    assert searched[0]["metrics"]["loss"] == pytest.approx(best["metrics"]["loss"], rel=1e-12)
    out = capsys.readouterr().out
    assert "- searched (budget 20)" in out and "test split: report these numbers" in out
    seed0 = str(run)
    append = ["--append", "analysis/plan-search", "--scale", "tiny", "--results", str(tmp_path / "r"), "--no-progress"]
    assert main(["plan", seed0, "--budget", "16", *append]) == 0
    assert re.search(r"appended   [1-9] rows", capsys.readouterr().out)
    assert main(["plan", seed0, "--budget", "16", *append]) == 0
    assert "appended   0 rows" in capsys.readouterr().out  # the same search on the same model adds nothing twice
    assert (
        main(["report", "analysis/plan-search", "--scale", "tiny", "--results", str(tmp_path / "r"), "--no-plot"]) == 0
    )
    assert "searched (budget 16)" in capsys.readouterr().out


def test_a_valid_search_chooses_on_the_first_half_and_compares_on_the_second():
    from types import SimpleNamespace

    from txl.search.search import Evaluated, Search

    def evaluated(first: float, second: float, halves: bool = True) -> Evaluated:
        loss = [first + 0.01 * (i % 3) for i in range(10)] + [second + 0.01 * (i % 3) for i in range(10)]
        result = SimpleNamespace(blocks={"loss": loss, "tokens": [1.0] * 20}, loss=sum(loss) / 20)
        return Evaluated([4], 4.0, "p", result, halves=halves)

    lucky, steady = evaluated(1.0, 2.0), evaluated(1.1, 1.1)  # lucky wins the half it was chosen on, not the other
    assert lucky.loss == pytest.approx(1.009) and lucky.held_out_loss == pytest.approx(2.009)
    search = Search(8, "positions", [4], lucky, [lucky, steady], best=lucky)
    d = search.versus_best(steady)
    assert d.mean == pytest.approx(-0.9) and d.hi < 0  # on the held-out half the chosen plan is the worse one
    whole = evaluated(1.0, 2.0, halves=False)
    assert whole.loss == whole.held_out_loss == pytest.approx(1.509)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'{"plans": []}', b'{"plans": [{"how": "x", "cost": 1, "mem_lens": ["a"]}]}', b"\xff"]
    + [
        b'{"plans": [{"how": "x", "cost": 1, "mem_lens": [0, 4], "chosen": %s}], "budget": 12, "unit": "positions", '
        b'"lengths": [4]}' % c
        for c in (b'{"sinks": "x"}', b'{"memory_dtype": "int3"}', b'{"range": "4"}', b"[]")
    ],
)
def test_a_damaged_plan_search_record_is_one_line(content, tmp_path):
    from txl.core.errors import TxlError
    from txl.search.results import read_search

    path = tmp_path / "plan-12.json"
    path.write_bytes(content)
    with pytest.raises(TxlError, match="plan search .*plan-12.json"):
        read_search(path)
    good = {"plans": [{"how": "x", "cost": 1, "mem_lens": [0, 4], "chosen": {"sinks": "0,2"}}], "budget": 12}
    good |= {"unit": "positions", "lengths": [4]}
    path.write_text(json.dumps(good))
    assert read_search(path) == good


def test_a_search_in_bytes_at_a_storage_precision_spends_the_bytes_at_that_precision(tmp_path, capsys):
    from conftest import tiny_run

    from txl.model.budget import budget
    from txl.model.plans import MemoryPlan
    from txl.train.loop import Trainer

    run = tiny_run(tmp_path, **{"train.steps": 2})
    Trainer(run, tmp_path / "run", progress=False).fit()
    argv = ["plan", str(tmp_path / "run"), "--budget-mib", "0.0015", "--lengths", "0,4,8,16", "--confirm", "1"]
    assert main([*argv, "--refine", "0", "--max-segments", "4", "--memory-dtype", "int8", "--no-progress"]) == 0
    record = json.loads((tmp_path / "run" / "analysis" / "plan-0.0015MiB-int8.json").read_text())
    assert "memory stored as int8" in record["title"]
    for p in record["plans"]:
        cfg = MemoryPlan.parse(2, memory=p["memory"], memory_dtype="int8").apply(run.model)
        assert p["cost"] == pytest.approx(budget(cfg, run.eval.tgt_len).bytes / 2**20)
    # at fp32 the same budget holds a quarter of the positions: int8 buys longer memories
    best = record["plans"][0]
    assert sum(best["mem_lens"]) * 16 * 4 > 0.0015 * 2**20 and best["within_budget"]


@pytest.mark.parametrize(
    "flags, chosen",
    [
        (["--dtypes", "fp32,int8,int4"], {"memory_dtype"}),
        (["--sinks-grid", "0,2", "--compress-grid", "0,4/2:mean"], {"sinks", "compress"}),
    ],
    ids=["precision", "sinks-and-compression"],
)
def test_a_joint_search_chooses_each_layers_length_and_more_within_the_bytes(flags, chosen, tmp_path, capsys):
    from conftest import tiny_run

    from txl.search.results import read_search
    from txl.train.loop import Trainer

    run = tiny_run(tmp_path, **{"train.steps": 2})
    Trainer(run, tmp_path / "run", progress=False).fit()
    argv = ["plan", str(tmp_path / "run"), "--budget-mib", "0.0015", "--lengths", "0,4,8,16", "--confirm", "2"]
    assert main([*argv, "--refine", "3", "--max-segments", "4", *flags]) == 0
    out = capsys.readouterr().out
    [path] = (tmp_path / "run" / "analysis").glob("plan-0.0015MiB-*.json")
    assert path.name in ("plan-0.0015MiB-fp32-int8-int4.json", "plan-0.0015MiB-0-2-0-4_2_mean.json")  # 4/2 not 42
    record = read_search(path)
    assert all(f"{name.replace('_', ' ')} chosen from" in record["title"] for name in chosen)
    assert "(each layer at the precision it stores)" in record["title"] and "(float32)" not in record["title"]
    # the sensitivities tried each layer at each value of each choice
    assert all(len({p["chosen"][name] for p in record["plans"]}) > 1 for name in chosen)
    for p in record["plans"]:  # every plan's cost is the budget of its lengths and choices
        assert set(p["chosen"]) == chosen
        cfg = MemoryPlan.parse(2, memory=p["memory"], **p["chosen"]).apply(run.model)
        assert p["cost"] == pytest.approx(budget(cfg, run.eval.tgt_len).bytes / 2**20)
    refs = [  # Rae & Razavi's plans as the evaluation stores them (not those at a searched precision)
        p for p in record["plans"] if any(h.startswith("lrm=") and " at " not in h for h in p["how"].split(", "))
    ]
    as_trained = next(p for p in record["plans"] if p["how"].startswith("as trained"))
    assert refs and all(p["chosen"] == as_trained["chosen"] for p in refs)  # Rae & Razavi's plans as evaluated
    if "memory_dtype" in chosen:  # and what a precision alone buys: Rae & Razavi's and a uniform plan at each
        hows = " | ".join(p["how"] for p in record["plans"])
        assert all("uniform " in hows and f" at {d}" in hows for d in ("fp32", "int8", "int4")), hows
        at_int4 = [p for p in record["plans"] if "uniform" in p["how"] and p["how"].endswith("at int4")]
        assert at_int4 and set(at_int4[0]["chosen"]["memory_dtype"].replace("2x", "").split(",")) == {"int4"}
    best = record["plans"][0]
    assert best["within_budget"] and all(f" {t}" in best["label"] for t in best["chosen"].values())
    check = re.search(r"check it   (txl eval .*)", out).group(1)
    assert all(f"--{f.replace('_', '-')} {t}" in check for f, t in best["chosen"].items())
    assert main(shlex.split(check)[1:] + ["--format", "csv"]) == 0  # the command it prints gives the same loss
    import csv

    table = list(csv.DictReader(capsys.readouterr().out.strip().splitlines()))
    loss = next(float(v) for k, v in table[-1].items() if k.startswith("loss"))
    assert loss == pytest.approx(best["metrics"]["loss"], rel=1e-6)
    for bad in ("int3", "x", "4/0"):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, flags[0], f"{'fp32' if flags[0] == '--dtypes' else 0},{bad}"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and bad in err and len(err.strip().splitlines()) == 1
