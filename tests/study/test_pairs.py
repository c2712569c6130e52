"""Pairwise comparisons of variants with Holm's correction, and the p-values beneath them."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import result_rows

import experiments  # noqa: F401  (registers every definition)
from txl.cli import main
from txl.core.stats import bootstrap_difference, holm, paired_difference, t_test
from txl.study.groups import aggregate
from txl.study.pairs import pairwise
from txl.study.registry import get_experiment, results_path
from txl.study.results import append_result


def test_holms_adjustment_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept at 0.06 (non-decreasing)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # 0.5 x 2 capped at 1, and none after it below
    assert holm([]) == []


def test_the_t_test_and_the_bootstrap_give_p_values_that_can_go_either_way():
    assert t_test([1.0, 2.0, 3.0]) == pytest.approx(0.0742, abs=5e-4)  # t = 3.464 on 2 degrees of freedom
    assert t_test([1.0, -1.0, 0.5, -0.5]) == pytest.approx(1.0)
    assert paired_difference({0: 2.0, 1: 3.0, 2: 4.0}, {0: 1.0, 1: 1.0, 2: 1.0}).p == pytest.approx(0.0742, abs=5e-4)
    same = {"loss": [1.0, 2.0, 1.5, 1.2] * 5, "tokens": [10] * 20}
    worse = {"loss": [x + 0.5 + 0.1 * (i % 2) for i, x in enumerate(same["loss"])], "tokens": [10] * 20}
    assert bootstrap_difference(worse, same).p < 0.01
    noisy = {"loss": [x + (0.3 if i % 2 else -0.3) for i, x in enumerate(same["loss"])], "tokens": [10] * 20}
    assert bootstrap_difference(noisy, same).p > 0.5


def test_a_block_bootstrap_p_is_not_floored_at_its_resamples_so_holm_over_many_pairs_can_pass():
    """A difference far beyond the data's noise gets a p far below 2 / (resamples + 1) (the floor a count of resamples
    beyond zero has), so it stays beyond the noise after Holm's adjustment over 200 pairs; a small one does not."""
    base = {"loss": [20.0 + (i * 7) % 5 for i in range(96)], "tokens": [10.0] * 96}
    far = {"loss": [x + 1.0 + 0.1 * (i % 3) for i, x in enumerate(base["loss"])], "tokens": base["tokens"]}
    near = {"loss": [x + (0.2 if i % 2 else -0.19) for i, x in enumerate(base["loss"])], "tokens": base["tokens"]}
    d_far, d_near = bootstrap_difference(far, base), bootstrap_difference(near, base)
    assert d_far.p < 1e-6 < 2 / 2001 and holm([d_far.p] * 200)[0] < 0.05
    assert 0.05 < d_near.p < 1.0 and not d_near.excludes_zero
    assert bootstrap_difference(base, base).p is None  # no difference at all: no spread, as t_test says of seeds
    assert t_test([0.0, 0.0, 0.0]) is None
    same_everywhere = {"loss": [x + 1.0 for x in base["loss"]], "tokens": base["tokens"]}
    assert bootstrap_difference(same_everywhere, base).p is None  # every block 0.1 worse: no test, not p = 0


def _rows():
    spec = {"a": [2.00, 2.01, 2.02], "b": [2.10, 2.115, 2.125], "c": [2.005, 2.03, 2.00]}  # b clearly worst
    return result_rows(
        *[
            {"variant": v, "seed": s, "kind": "train", "metrics": {"bpb": x}}
            for v, xs in spec.items()
            for s, x in enumerate(xs)
        ]
    )


def test_every_pair_is_compared_better_first_and_holm_decides_beyond_noise():
    pairs = pairwise(aggregate(_rows(), "bpb"), "bpb")
    assert [(p.a, p.b) for p in pairs] == [("a", "c"), ("a", "b"), ("c", "b")]
    by = {(p.a, p.b): p for p in pairs}
    assert by[("a", "b")].diff.mean == pytest.approx(-0.1033, abs=1e-4) and by[("a", "b")].beyond_noise
    assert not by[("a", "c")].beyond_noise  # overlapping seeds
    raw = [p.diff.p for p in pairs]
    assert [p.p_holm for p in pairs] == pytest.approx(holm(raw)) and all(p.p_holm >= q for p, q in zip(pairs, raw))


def test_txl_report_pairs_prints_and_writes_the_pairs(tmp_path, capsys):
    exp = get_experiment("rae2020/lrm-count", "tiny")
    path = results_path(tmp_path, exp)
    for row in _rows():
        append_result(path, replace(row, experiment=exp.name))
    argv = ["report", exp.name, "--scale", "tiny", "--results", str(tmp_path), "--no-plot", "--pairs"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "beyond noise (Holm)" in out and "Holm's adjustment over the 3 pairs" in out
    assert (path.parent / "pairs.md").is_file() and (path.parent / "pairs.csv").read_text().count("\n") == 4


def test_differences_without_spread_are_not_a_test_at_p_zero():
    from txl.core.stats import paired_difference
    from txl.study.groups import Group
    from txl.study.pairs import pairs_table, pairwise

    d = paired_difference({0: 2.1, 1: 2.2, 2: 2.3}, {0: 2.0, 1: 2.1, 2: 2.2})  # every seed 0.1 worse, exactly
    assert t_test([0.1, 0.1, 0.1]) is None and d.p is None  # equal but for rounding: no test either
    groups = [
        Group("a", "train", {}, {}, [2.0, 2.1, 2.2], by_seed={0: 2.0, 1: 2.1, 2: 2.2}),
        Group("b", "train", {}, {}, [2.5, 2.6, 2.7], by_seed={0: 2.5, 1: 2.6, 2: 2.7}),
    ]
    (pair,) = pairwise(groups, "bpb")
    assert pair.p_holm is None and "no spread: not tested" in pairs_table([pair], "bpb")


def _frontier_rows():
    """A frontier in miniature: the source, its adapted control, a budget's trained, cut and adapted rows."""
    spec = [  # variant, kind, of, group, plan memory, bpb per seed
        ("long", "train", None, "all", "4x16", [2.00, 2.03, 1.99]),
        ("long adapted", "adapt", "long", "all", "4x16", [1.95, 1.99, 1.93]),
        ("short", "train", None, "1/4", "4x4", [2.10, 2.12, 2.09]),
        ("int8", "train", None, "1/4", "4x16", [2.05, 2.06, 2.06]),
        ("short cut", "eval", "long", "1/4", "4x4", [2.30, 2.33, 2.31]),
        ("int8 cut", "eval", "long", "1/4", "4x16", [2.001, 2.031, 1.992]),
        ("short adapted", "adapt", "long", "1/4", "4x4", [1.99, 2.04, 1.96]),
    ]
    return result_rows(
        *[
            {"variant": v, "seed": s, "kind": k, "of": of, "group": g, "plan": {"memory": m}, "metrics": {"bpb": x}}
            for v, k, of, g, m, xs in spec
            for s, x in enumerate(xs)
        ]
    )


def test_each_variant_is_read_against_like_and_pairs_stay_within_kinds():
    from txl.study.groups import references

    groups = aggregate(_frontier_rows(), "bpb")
    refs = {name: g.variant for name, g in references(groups).items()}
    assert refs == {
        "long adapted": "long",  # the control against the model it adapts
        "int8": "short",  # trained against its budget's first trained
        "short cut": "long",  # cut at evaluation against its own source
        "int8 cut": "long",
        "short adapted": "long adapted",  # adapted against the control adapted for the same steps
    }
    pairs = pairwise(groups, "bpb")
    kinds = {g.variant: g.kind for g in groups}
    named = {frozenset((p.a, p.b)) for p in pairs}
    within = {frozenset(x) for x in [("short", "int8"), ("short cut", "int8 cut")]}
    assert named == within | {frozenset((a, b)) for a, b in refs.items()}
    crossed = [p for p in pairs if kinds[p.a] != kinds[p.b]]
    assert {frozenset((p.a, p.b)) for p in crossed} <= {frozenset((a, b)) for a, b in refs.items()}
    assert not any({p.a, p.b} == {"short", "short cut"} for p in pairs)  # a trained row never meets a cut one


def test_a_named_baseline_rules_its_groups_trained_rows_and_cut_rows_meet_their_source():
    from txl.study.groups import references

    refs = {n: g.variant for n, g in references(aggregate(_frontier_rows(), "bpb"), "int8").items()}
    assert refs["short"] == "int8" and refs["short cut"] == "long" and refs["short adapted"] == "long adapted"


def test_pairs_of_experiments_reported_together_share_one_holm_adjustment(tmp_path, capsys):
    for name in ("rae2020/lrm-count", "rae2020/lrm-placement"):
        exp = get_experiment(name, "tiny")
        for row in _rows():
            append_result(results_path(tmp_path, exp), replace(row, experiment=exp.name))
    argv = ["report", "rae2020/lrm-count", "rae2020/lrm-placement", "--scale", "tiny", "--results", str(tmp_path)]
    assert main([*argv, "--no-plot", "--pairs"]) == 0
    out = capsys.readouterr().out
    assert out.count("Holm's adjustment over the 6 pairs of 2 experiments") == 2
    alone = pairwise(aggregate(_rows(), "bpb"), "bpb")
    path = results_path(tmp_path, get_experiment("rae2020/lrm-count", "tiny")).parent / "pairs.csv"
    pooled = [float(line.split(",")[-2]) for line in path.read_text().splitlines()[1:]]
    assert pooled != pytest.approx([p.p_holm for p in alone])  # six tests at once, not three
    assert all(q >= p.p_holm for q, p in zip(pooled, alone))


def test_the_tables_beyond_noise_is_its_pairs_holm_verdict_not_the_raw_interval(tmp_path):
    """A difference whose interval excludes zero is not beyond the noise when Holm's adjustment over the table's
    pairs says it is not: the report's column and the pairs table give one verdict for one pair."""
    from txl.study.report import beyond, build_report

    report = build_report(_frontier_rows(), "t", tmp_path, plot=False)
    by_pair = {frozenset((p.a, p.b)): p for p in report["pairs"]}
    read = [g for g in report["groups"] if g.reference]
    assert len(read) == 5 and all(g.p_holm == by_pair[frozenset((g.variant, g.reference))].p_holm for g in read)
    lines = {g.variant: next(x for x in report["table"].splitlines() if f" {g.variant} " in x) for g in read}
    raw_only = [g for g in read if g.vs_baseline.excludes_zero and not beyond(g)]
    assert {g.variant for g in raw_only} == {"long adapted", "int8", "short adapted"}  # raw p 0.013 to 0.034
    assert all(lines[g.variant].rstrip(" *~").endswith("no") for g in raw_only)
    assert beyond(next(g for g in read if g.variant == "short cut"))
    assert "Holm's adjustment over the 6 pairs" in report["legend"]  # int8 against short is one pair
