"""Intervals, paired differences and the block bootstrap, against closed forms (their report: test_report)."""

import math
import random

import pytest

from txl.core.stats import bootstrap_difference, mean_interval, paired_difference, t_quantile


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
