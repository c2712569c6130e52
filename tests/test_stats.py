"""Intervals, paired differences and the block bootstrap, against closed forms; and the report that shows them."""

import math
import random

import pytest

from txl.report import build_report
from txl.stats import bootstrap_difference, mean_interval, paired_difference, t_quantile


@pytest.mark.parametrize(
    "df, value",  # two-sided 95% critical values from printed t tables (df 10^6: z + (z^3 + z) / 4df)
    [(1, 12.706204736), (2, 4.302652730), (4, 2.776445105), (10, 2.228138852), (30, 2.042272456), (10**6, 1.9599664)],
)
def test_t_quantiles_match_the_tables(df, value):
    assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-6)
    assert t_quantile(0.025, df) == pytest.approx(-value, abs=1e-6)


def test_mean_interval_in_closed_form():
    i = mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1: half-width t(0.975, 2) / sqrt(3)
    half = 4.302652730 / math.sqrt(3)
    assert (i.mean, i.n, i.kind) == (2.0, 3, "seeds")
    assert i.lo == pytest.approx(2 - half) and i.hi == pytest.approx(2 + half)
    assert not i.excludes_zero
    one = mean_interval([2.5])
    assert (one.mean, one.lo, one.hi, one.kind) == (2.5, 2.5, 2.5, "one seed")


def test_paired_difference_uses_only_shared_seeds():
    values = {0: 2.0, 1: 2.2, 2: 2.4, 7: 9.9}
    base = {0: 1.0, 1: 1.1, 2: 1.3}
    d = paired_difference(values, base)  # differences 1.0, 1.1, 1.1
    sd = math.sqrt(((1.0 - 16 / 15) ** 2 + 2 * (1.1 - 16 / 15) ** 2) / 2)
    half = 4.302652730 * sd / math.sqrt(3)
    assert d.kind == "paired seeds" and d.n == 3
    assert d.mean == pytest.approx(16 / 15) and d.hi - d.mean == pytest.approx(half)
    assert d.excludes_zero
    assert paired_difference({5: 1.0}, base) is None


def test_pairing_removes_the_shared_seed_effect():
    # each seed shifts both variants alike: unpaired intervals overlap, the paired one excludes zero
    shift = {0: 0.0, 1: 0.3, 2: -0.2, 3: 0.1}
    a = {s: 2.0 + v for s, v in shift.items()}
    b = {s: 2.05 + v + 0.001 * s for s, v in shift.items()}
    ia, ib = mean_interval(list(a.values())), mean_interval(list(b.values()))
    assert ia.lo <= ib.hi and ib.lo <= ia.hi
    assert paired_difference(b, a).excludes_zero


def test_bootstrap_of_an_exact_difference_is_that_difference():
    tokens = [100.0] * 40
    base = {"loss": [150.0 + 10 * (i % 7) for i in range(40)], "tokens": tokens}
    other = {"loss": [x + 0.1 * t for x, t in zip(base["loss"], tokens)], "tokens": tokens}
    d = bootstrap_difference(other, base)
    assert d.kind == "blocks" and d.n == 40
    assert d.mean == pytest.approx(0.1) and d.lo == pytest.approx(0.1) and d.hi == pytest.approx(0.1)


def test_bootstrap_interval_covers_a_known_difference():
    rng = random.Random(3)
    n, per = 200, 500.0
    base_loss = [per * (2.0 + rng.gauss(0, 0.3)) for _ in range(n)]  # blocks differ a lot in difficulty ...
    other_loss = [x + per * (0.05 + rng.gauss(0, 0.02)) for x in base_loss]  # ... the difference much less
    d = bootstrap_difference({"loss": other_loss, "tokens": [per] * n}, {"loss": base_loss, "tokens": [per] * n})
    assert d.lo < 0.05 < d.hi and d.excludes_zero
    assert d.half_width == pytest.approx(1.96 * 0.02 / math.sqrt(n), rel=0.25)  # the paired spread, not the blocks'
    with pytest.raises(ValueError, match="same blocks"):
        bootstrap_difference({"loss": other_loss[:10], "tokens": [per] * 10}, {"loss": base_loss, "tokens": [per] * n})


def row(variant, seed, bpb, cached, kind="train", of=None, blocks=None):
    return {
        "variant": variant, "seed": seed, "kind": kind, "of": of, "group": "", "scale": "tiny",
        "plan": {"memory": variant, "range": "1xinf", "attn": "1xxl"},
        "budget": {"cached_positions": cached, "long_range_positions": 0, "memory_bytes": 4 * cached,
                   "attn_flops_per_token": 1.0, "receptive_field": float(cached), "params": 10},
        "metrics": {"bpb": bpb, "loss": bpb * math.log(2)}, "blocks": blocks,
    }


def test_report_shows_intervals_and_paired_differences(tmp_path):
    rows = [row("full", s, v, 64) for s, v in enumerate([2.0, 2.1, 2.2])]
    rows += [row("short", s, v, 8) for s, v in enumerate([2.3, 2.42, 2.5])]
    report = build_report(rows, "t", tmp_path, plot=False, baseline="full")
    short = next(g for g in report["groups"] if g.variant == "short")
    full = next(g for g in report["groups"] if g.variant == "full")
    assert full.interval.hi - full.interval.mean == pytest.approx(4.302652730 * 0.1 / math.sqrt(3))
    assert short.vs_baseline.mean == pytest.approx(0.30667, abs=1e-5) and short.vs_baseline.excludes_zero
    assert full.vs_baseline is None
    assert "2.1000 [1.8516, 2.3484]" in report["table"]
    assert "+0.3067 [" in report["table"] and "paired seeds, n=3" in report["table"] and "yes" in report["table"]
    assert "paired difference from full" in (tmp_path / "report.md").read_text()


def test_one_seed_falls_back_to_the_block_bootstrap(tmp_path):
    tokens = [10.0] * 30
    base = {"loss": [20.0 + i % 5 for i in range(30)], "tokens": tokens}
    worse = {"loss": [x + 1.0 for x in base["loss"]], "tokens": tokens}  # 0.1 nats per token worse
    rows = [row("full", 0, 2.0, 64, blocks=base), row("eval short", 0, 2.0 + 0.1 / math.log(2), 8, "eval", "full", worse)]
    report = build_report(rows, "t", tmp_path, plot=False, baseline="full")
    d = next(g for g in report["groups"] if g.variant == "eval short").vs_baseline
    assert d.kind == "blocks" and d.mean == pytest.approx(0.1 / math.log(2))  # in bits per byte, like the table
    assert "blocks, n=30" in report["table"]


def test_report_plot_draws_one_budget_by_variant(tmp_path):
    rows = [row(name, s, 2.0 + 0.1 * s + 0.01 * i, 32) for i, name in enumerate(["first", "interleave", "last"]) for s in range(2)]
    report = build_report(rows, "placement", tmp_path, baseline="interleave")
    assert report["files"]["png"].stat().st_size > 0


def test_each_task_group_is_compared_with_its_own_baseline(tmp_path):
    rows = []
    for group in ("lag 8", "lag 32"):
        for s in range(3):
            for i, (name, cached) in enumerate((("long", 64), ("short", 8))):
                r = row(f"{group} {name}", s, 2.0 + 0.1 * i + 0.01 * s * (1 + i), cached)
                r["group"] = group
                rows.append(r)
    report = build_report(rows, "t", tmp_path, plot=False)
    shorts = [g for g in report["groups"] if g.variant.endswith("short")]
    assert len(shorts) == 2 and all(g.vs_baseline is not None and g.vs_baseline.mean == pytest.approx(0.11) for g in shorts)


def test_a_variant_whose_plan_differs_by_seed_says_so():
    from txl.report import aggregate

    def row(seed, memory, bpb):
        return {"variant": "searched", "seed": seed, "kind": "eval", "plan": {"memory": memory},
                "budget": {"cached_positions": 8, "receptive_field": 16 + seed}, "metrics": {"bpb": bpb}}

    same = aggregate([row(0, "2x4", 1.0), row(1, "2x4", 1.1)], "bpb")
    assert same[0].plan["memory"] == "2x4"
    mixed = aggregate([row(0, "2x4", 1.0), row(1, "1x0,1x8", 1.1)], "bpb")
    assert mixed[0].plan["memory"] == "one per seed (2 differ)" and mixed[0].budget["receptive_field"] == 16


def test_results_measured_under_two_configurations_are_named():
    from txl.report import superseded

    rows = [{"variant": "a", "seed": 0, "config_hash": "x"}, {"variant": "a", "seed": 0, "config_hash": "y"},
            {"variant": "b", "seed": 0, "config_hash": "x"}, {"variant": "b", "seed": 0, "config_hash": "x"}]
    assert superseded(rows) == ["a seed 0"]


def test_recl_is_where_the_relative_gain_over_the_group_stops():
    """Two runs: one keeps gaining to 64 tokens of context, one stops at 16 (Dai et al.'s RECL, appendix C)."""
    import numpy as np
    import pytest

    from txl.analysis import recl
    from txl.errors import TxlError

    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 0.5, 200)  # the same tokens for both runs, some harder than others

    def curve(by_length):
        return [{"context": c, "cut_tokens": list(loss + noise)} for c, loss in by_length.items()]

    far = curve({0: 3.0, 4: 2.5, 16: 2.0, 64: 1.5, 256: 1.5})
    near = curve({0: 3.0, 4: 2.5, 16: 2.0, 64: 2.0, 256: 2.0})
    assert recl({"far": far, "near": near}) == {"far": (64, False), "near": (16, False)}
    still = curve({0: 3.0, 4: 2.5, 16: 2.0, 64: 1.5, 256: 1.0})
    assert recl({"still": still, "near": near})["still"] == (256, True)  # never stopped: a lower bound
    with pytest.raises(TxlError, match="the same tokens"):
        recl({"far": far, "short": [{"context": c, "cut_tokens": [1.0] * 10} for c in (0, 4, 16, 64, 256)]})
