"""memory/frontier: every family trained at every budget, spending it, beside an adapted control."""

from __future__ import annotations

import experiments  # noqa: F401  (registers the experiments)
from experiments.frontier import FRACTIONS, family_plans
from txl.model.budget import budget
from txl.model.plans import apply_plans, describe
from txl.study.registry import get_experiment

PLAN = ("memory", "attn_range", "memory_dtype", "sinks", "compress")


def _bytes(exp, v) -> int:
    plan = {k: getattr(v, k) for k in PLAN if getattr(v, k) is not None}
    return budget(apply_plans(exp.base.model, **plan), exp.base.train.tgt_len).bytes


def test_every_family_is_trained_cut_and_adapted_at_every_budget():
    exp = get_experiment("memory/frontier", "medium")
    by_group: dict[str, dict[str, list]] = {}
    for v in exp.variants:
        by_group.setdefault(v.group, {}).setdefault(v.kind, []).append(v)
    assert set(by_group) == {"all long", *(f"{f} of the bytes" for f in FRACTIONS)}
    control = by_group["all long"]["adapt"]
    assert [c.memory for c in control] == [exp.variants[0].memory]  # the all-long model adapted to its own plan
    steps = {v.adapt_steps for v in exp.variants if v.adapts}
    assert steps == {control[0].adapt_steps}  # every adapted row trains as long as the control
    families = 8 + 1  # fewer long, top, shorter, int8, int4, mean, conv, sinks; one plan shared by two at 1/8
    for label in FRACTIONS:
        kinds = by_group[f"{label} of the bytes"]
        trained = {v.name.removesuffix(" (trained)") for v in kinds["train"]}
        assert len(trained) + sum(" = " in t for t in trained) >= families - 1
        assert {v.name.removesuffix(" (adapted)") for v in kinds["adapt"]} == trained
        cut = {v.name.removesuffix(" (at evaluation)") for v in kinds["eval"]}
        assert cut == {t for t in trained if ":conv" not in t}  # no learned compression in the all-long model
        assert any("sinks" in t for t in trained) and any(":conv" in t for t in trained)


def test_each_family_spends_its_budget_and_a_plan_is_in_one_group():
    exp = get_experiment("memory/frontier", "medium")
    seen: dict[str, str] = {}
    for v in exp.variants:
        assert v.budget_bytes is not None, v.name
        share = _bytes(exp, v) / v.budget_bytes
        assert 0.95 <= share <= 1.0, (v.name, share)
        plan = describe(apply_plans(exp.base.model, **{k: getattr(v, k) for k in PLAN if getattr(v, k)}))
        assert seen.setdefault(str(plan), v.group) == v.group, v.name
    long = int(exp.variants[0].memory)
    int4 = [v for v in exp.variants if v.memory_dtype == "int4" and v.group.startswith("1/4")]
    assert int(int4[0].memory) > long  # the bytes int4 saves buy positions beyond the trained length
    sinks = [v for v in exp.variants if v.sinks and v.kind != "eval"]
    assert sinks and all(any(s.startswith("train.sink_refresh=") for s in v.set) for v in sinks)


def test_a_plan_two_families_share_is_one_variant_named_for_both():
    exp = get_experiment("memory/frontier", "medium")
    plans = family_plans(exp.base.model, exp.base.train.tgt_len, _bytes(exp, exp.variants[0]) // 8, 128, 8)
    assert "shorter memory" not in plans  # at an eighth no long layer fits: Rae & Razavi's plan is memory 16
    assert plans["fewer long layers"][0] == "lrm=0,srm=16 = memory 16"
