"""txl.study.report: seeds aggregated with intervals, paired differences from a baseline, Pareto frontiers, plots."""

import math

import pytest
from conftest import result_rows

from txl.study.report import build_report


def row(variant, seed, bpb, cached, kind="train", of=None, blocks=None):
    return {
        "variant": variant,
        "seed": seed,
        "kind": kind,
        "of": of,
        "group": "",
        "scale": "tiny",
        "plan": {"memory": variant, "range": "1xinf", "attn": "1xxl"},
        "budget": {
            "cached_positions": cached,
            "long_range_positions": 0,
            "memory_bytes": 4 * cached,
            "attn_flops_per_token": 1.0,
            "receptive_field": float(cached),
            "params": 10,
        },
        "metrics": {"bpb": bpb, "loss": bpb * math.log(2)},
        "blocks": blocks,
    }


def test_report_shows_intervals_and_paired_differences(tmp_path):
    rows = [row("full", s, v, 64) for s, v in enumerate([2.0, 2.1, 2.2])]
    rows += [row("short", s, v, 8) for s, v in enumerate([2.3, 2.42, 2.5])]
    report = build_report(result_rows(*rows), "t", tmp_path, plot=False, baseline="full")
    short = next(g for g in report["groups"] if g.variant == "short")
    full = next(g for g in report["groups"] if g.variant == "full")
    assert full.interval.hi - full.interval.mean == pytest.approx(4.302652730 * 0.1 / math.sqrt(3))
    assert short.vs_baseline.mean == pytest.approx(0.30667, abs=1e-5) and short.vs_baseline.excludes_zero
    assert full.vs_baseline is None
    assert "2.1000 [1.8516, 2.3484]" in report["table"]
    assert "+0.3067 [" in report["table"] and "paired seeds, n=3" in report["table"] and "yes" in report["table"]
    assert "paired difference from full" in (tmp_path / "report.md").read_text()


def test_the_seed_sd_of_each_variant_is_shown_when_it_has_several_seeds(tmp_path):
    rows = [row("full", s, v, 64) for s, v in enumerate([2.0, 2.1, 2.3])]
    rows += [row("eval short", 0, 2.4, 8, "eval", "full")]
    report = build_report(result_rows(*rows), "t", tmp_path, plot=False, baseline="full")
    lines = report["table"].splitlines()
    line = {g.variant: next(x for x in lines if x.startswith(g.variant)) for g in report["groups"]}
    assert " 0.1528 " in line["full"]  # sample SD of 2.0, 2.1, 2.3
    assert " 0.1528 " not in line["eval short"] and "seed SD" in report["table"]
    full = next(r for r in report["csv"].splitlines()[1:] if ",full," in r)
    assert "0.1527" in full  # the CSV's bpb_seed_sd, unrounded
    one = build_report(result_rows(row("a", 0, 2.0, 8), row("b", 0, 2.1, 4)), "t", tmp_path / "one", plot=False)
    assert "seed SD" not in one["table"]  # one seed each: no column of dashes


def test_one_seed_falls_back_to_the_block_bootstrap(tmp_path):
    tokens = [10.0] * 30
    base = {"loss": [20.0 + i % 5 for i in range(30)], "tokens": tokens}
    worse = {"loss": [x + 1.0 for x in base["loss"]], "tokens": tokens}  # 0.1 nats per token worse
    rows = [
        row("full", 0, 2.0, 64, blocks=base),
        row("eval short", 0, 2.0 + 0.1 / math.log(2), 8, "eval", "full", worse),
    ]
    report = build_report(result_rows(*rows), "t", tmp_path, plot=False, baseline="full")
    d = next(g for g in report["groups"] if g.variant == "eval short").vs_baseline
    assert d.kind == "blocks" and d.mean == pytest.approx(0.1 / math.log(2))  # in bits per byte, like the table
    assert "blocks, n=30" in report["table"]


def test_two_models_trained_apart_with_one_seed_each_are_shown_but_not_tested(tmp_path):
    """The block bootstrap holds the data's noise only: between two trainings (one seed each) it would call any
    difference of training's noise real. The interval is shown; the verdict says it was not tested, and the pair
    takes no part in Holm's adjustment. An evaluation of the same model is still tested over the blocks."""
    from txl.study.pairs import pairs_table, pairwise

    tokens = [10.0] * 30
    base = {"loss": [20.0 + i % 5 for i in range(30)], "tokens": tokens}
    worse = {"loss": [x + 1.0 + 0.1 * (i % 3) for i, x in enumerate(base["loss"])], "tokens": tokens}
    rows = [row("full", 0, 2.0, 64, blocks=base), row("short", 0, 2.2, 8, blocks=worse)]
    rows += [row("eval short", 0, 2.2, 8, "eval", "full", worse)]
    report = build_report(result_rows(*rows), "t", tmp_path, plot=False, baseline="full")
    by = {g.variant: g for g in report["groups"]}
    assert by["short"].vs_baseline.excludes_zero and by["short"].vs_baseline.p is None
    assert by["eval short"].vs_baseline.p < 0.05
    line = next(line for line in report["table"].splitlines() if line.startswith("short"))
    assert "one seed: untested" in line and "blocks, one training each, n=30" in line
    pairs = pairwise(report["groups"], "bpb")
    trained = next(p for p in pairs if {p.a, p.b} == {"full", "short"})
    assert trained.p_holm is None and trained.beyond_noise is None
    assert "one seed each: not tested" in pairs_table([trained], "bpb")
    assert all(p.p_holm is not None for p in pairs if p is not trained)


def test_report_plot_draws_one_budget_by_variant(tmp_path):
    rows = [
        row(name, s, 2.0 + 0.1 * s + 0.01 * i, 32)
        for i, name in enumerate(["first", "interleave", "last"])
        for s in range(2)
    ]
    report = build_report(result_rows(*rows), "placement", tmp_path, baseline="interleave")
    assert report["files"]["png"].stat().st_size > 0


def test_each_task_group_is_compared_with_its_own_baseline(tmp_path):
    rows = []
    for group in ("lag 8", "lag 32"):
        for s in range(3):
            for i, (name, cached) in enumerate((("long", 64), ("short", 8))):
                r = row(f"{group} {name}", s, 2.0 + 0.1 * i + 0.01 * s * (1 + i), cached)
                r["group"] = group
                rows.append(r)
    report = build_report(result_rows(*rows), "t", tmp_path, plot=False)
    shorts = [g for g in report["groups"] if g.variant.endswith("short")]
    assert len(shorts) == 2 and all(
        g.vs_baseline is not None and g.vs_baseline.mean == pytest.approx(0.11) for g in shorts
    )


def test_a_variant_whose_plan_differs_by_seed_says_so():
    from txl.study.groups import aggregate

    def row(seed, memory, bpb):
        return {
            "variant": "searched",
            "seed": seed,
            "kind": "eval",
            "plan": {"memory": memory},
            "budget": {"cached_positions": 8, "receptive_field": 16 + seed},
            "metrics": {"bpb": bpb},
        }

    same = aggregate(result_rows(row(0, "2x4", 1.0), row(1, "2x4", 1.1)), "bpb")
    assert same[0].plan["memory"] == "2x4"
    mixed = aggregate(result_rows(row(0, "2x4", 1.0), row(1, "1x0,1x8", 1.1)), "bpb")
    assert mixed[0].plan["memory"] == "one per seed (2 differ)" and mixed[0].budget["receptive_field"] == 16


def test_results_measured_under_two_configurations_are_named():
    from txl.study.report import superseded

    rows = [
        {"variant": "a", "seed": 0, "config_hash": "x"},
        {"variant": "a", "seed": 0, "config_hash": "y"},
        {"variant": "b", "seed": 0, "config_hash": "x"},
        {"variant": "b", "seed": 0, "config_hash": "x"},
    ]
    assert superseded(result_rows(*({**r, "kind": "train", "metrics": {}} for r in rows))) == ["a seed 0"]


def test_report_marks_the_pareto_frontier_and_aggregates_seeds():
    from txl.study.groups import aggregate
    from txl.study.report import mark_pareto

    def row(variant, seed, cached, bpb):
        return {
            "variant": variant,
            "seed": seed,
            "kind": "train",
            "plan": {"memory": "", "range": "", "attn": ""},
            "budget": {"cached_positions": cached, "memory_bytes": 0, "receptive_field": 0},
            "metrics": {"bpb": bpb},
        }

    rows = [row("a", 0, 10, 2.0), row("a", 1, 10, 2.2), row("b", 0, 20, 1.5), row("c", 0, 30, 1.8), row("d", 0, 5, 3.0)]
    groups = aggregate(result_rows(*rows), "bpb")
    mark_pareto(groups, "bpb", "cached_positions")
    by = {g.variant: g for g in groups}
    assert by["a"].mean == pytest.approx(2.1) and by["a"].spread == pytest.approx(0.1414, abs=1e-3)
    assert [g.variant for g in groups if g.pareto] == ["a", "b", "d"]  # c costs more than b and is worse


def test_pareto_frontiers_are_drawn_within_each_task(tmp_path):
    """Variants on different tasks never dominate each other:
    a cheap plan on an easy lag is no frontier for a hard one."""
    from txl.study.report import build_report

    def row(variant, group, reach, accuracy):
        return {
            "variant": variant,
            "group": group,
            "seed": 0,
            "kind": "train",
            "plan": {"memory": "", "range": "", "attn": ""},
            "budget": {"cached_positions": reach, "memory_bytes": 0, "receptive_field": float(reach)},
            "metrics": {"accuracy": accuracy},
        }

    rows = [
        row("easy/short", "lag 12", 6, 0.12),
        row("easy/long", "lag 12", 12, 0.99),
        row("hard/short", "lag 40", 20, 0.12),
        row("hard/long", "lag 40", 40, 0.90),
    ]
    report = build_report(result_rows(*rows), "lags", tmp_path, x_axis="receptive_field")
    front = {g.variant for g in report["groups"] if g.pareto}
    assert front == {
        "easy/short",
        "easy/long",
        "hard/short",
        "hard/long",
    }  # pooled, easy/long would dominate both hard ones
    assert report["table"].splitlines()[0].split()[0] == "group"
    assert "40.000" not in report["table"] and " 40 " in report["table"]  # token counts print as whole numbers
    assert [g.group for g in report["groups"]] == ["lag 12", "lag 12", "lag 40", "lag 40"]
    assert (tmp_path / "report.png").stat().st_size > 0


def test_memory_dtypes_get_a_column_and_bytes_an_axis(tmp_path, capsys):
    from txl.cli import main

    rows = result_rows(
        {"variant": "fp32", "seed": 0, "kind": "train", "metrics": {"bpb": 2.0}, "budget": {"memory_bytes": 4096}},
        {
            "variant": "int8",
            "seed": 0,
            "kind": "eval",
            "plan": {"dtype": "2xint8"},
            "metrics": {"bpb": 2.1},
            "budget": {"memory_bytes": 1152},
        },
    )
    report = build_report(rows, "t", tmp_path, x_axis="memory_bytes", plot=False)
    header, _, *lines = report["table"].splitlines()
    by = {line.split()[0]: line.split() for line in lines}
    assert "stored as" in header and by["int8"][2] == "2xint8" and by["fp32"][2] == "fp32"  # cheaper first
    assert report["csv"].splitlines()[0].split(",")[6] == "stored_as"
    assert [g.pareto for g in report["groups"]] == [True, True]  # cheaper in bytes, worse in bpb: both on the front
    plain = build_report(rows[:1], "t", tmp_path, plot=False)
    assert "stored as" not in plain["table"]
    capsys.readouterr()
    assert main(["report", "nothing/here", "--x", "bytes"]) == 2  # '--x bytes' parses (then no such experiment)
    err = capsys.readouterr().err
    assert "unknown experiment 'nothing/here'" in err and "invalid choice" not in err


def test_sinks_get_a_column_beside_the_memory_dtypes(tmp_path):
    rows = result_rows(
        {"variant": "window", "seed": 0, "kind": "train", "metrics": {"bpb": 2.0}, "budget": {"memory_bytes": 512}},
        {
            "variant": "window+sinks",
            "seed": 0,
            "kind": "eval",
            "plan": {"sinks": "2x4", "dtype": "2xint8"},
            "metrics": {"bpb": 1.9},
            "budget": {"memory_bytes": 640},
        },
    )
    report = build_report(rows, "t", tmp_path, x_axis="memory_bytes", plot=False)
    header, _, *lines = report["table"].splitlines()
    by = {line.split()[0]: line.split() for line in lines}
    assert header.index("stored as") < header.index("sinks")
    assert by["window+sinks"][2:4] == ["2xint8", "2x4"] and by["window"][2:4] == ["fp32", "0"]
    assert report["csv"].splitlines()[0].split(",")[6:8] == ["stored_as", "sinks"]


def test_numbers_that_differ_or_are_not_zero_are_printed_so():
    from txl.core.stats import Interval
    from txl.core.table import format_table
    from txl.study.report import _interval_text

    tiny = Interval(-0.00003, -0.00004, -0.00002, 3, "paired seeds")
    assert _interval_text(tiny, signed=True) == "-0.00003 [-0.00004, -0.00002]"  # not -0.0000 [-0.0000, -0.0000]
    assert _interval_text(Interval(2.3153, 2.30001, 2.3305, 3, "t")) == "2.3153 [2.3000, 2.3305]"
    # two plans whose bpb differ in the fourth decimal are not shown as equal; a column that needs 3 keeps 3
    table = format_table(["plan", "bpb", "MiB"], [["a", 2.4561, 0.5], ["b", 2.4564, 0.25]])
    assert "2.4561" in table and "2.4564" in table and "0.500" in table and "0.250" in table


def test_labels_of_points_that_nearly_coincide_are_fanned_out_highest_on_top():
    from txl.study.figures import _label_offsets

    xs, ys = [1000, 1000, 600, 2000], [7.85192, 7.85191, 7.8523, 7.8519]
    offsets = _label_offsets(xs, ys)
    assert offsets[0][1] > offsets[1][1]  # the higher of the two close points has the higher label
    assert len({offsets[0], offsets[1]}) == 2 and offsets[2] != offsets[0]


def test_task_groups_come_in_the_experiments_order_not_in_the_order_rows_were_written(tmp_path):
    rows = []
    for group, name in (("late", "b"), ("first", "a")):  # the later group's row finished first
        r = row(name, 0, 2.0, 8)
        r["group"] = group
        rows.append(r)
    table = build_report(result_rows(*rows), "t", tmp_path, plot=False, group_order=["first", "late"])["table"]
    lines = [line for line in table.splitlines() if line.startswith(("first", "late"))]
    assert [line.split()[0] for line in lines] == ["first", "late"]
