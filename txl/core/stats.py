"""The noise of a comparison: intervals over seeds, paired differences, and a block bootstrap.

Every interval here is two-sided at `level` (0.95 by default) and says what kind it is:

- `seeds`: Student's t over the per-seed values (each seed a separately trained model);
- `paired seeds`: t over per-seed differences against a baseline (same seed, same data);
- `blocks`: a paired bootstrap over evaluation blocks (contiguous runs of text, see
  txl.evaluation.evaluate.blocks) when there is one seed: it captures the noise of the data, not of training.
  Its interval is the resamples' percentiles; its p-value the normal approximation with their standard
  deviation as the standard error (a count of resamples beyond zero could not go below 2 / (resamples + 1)).
"""

from __future__ import annotations

import functools
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
# the block bootstrap between two models trained apart, one seed each: its interval is the data's noise alone, and
# the training noise that separates two such models is unknown, so it is shown but is no test (p None)
TRAININGS = "blocks, one training each"


@dataclass
class Interval:
    """A mean (or a difference of means) and its interval."""

    mean: float
    lo: float
    hi: float
    n: int  # seeds, or blocks for a bootstrap
    kind: str  # "seeds", "paired seeds", "blocks", TRAININGS, or "one seed" (no interval)
    p: float | None = None  # two-sided p-value of "no difference", for a paired difference (t, or the bootstrap)

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def scaled(self, f: Callable[[float], float]) -> Interval:
        return Interval(f(self.mean), f(self.lo), f(self.hi), self.n, self.kind, self.p)


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t value below which a fraction `p` of the distribution lies (bisection on the CDF)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def untested_trainings(d: Interval) -> bool:
    """A difference between two models trained apart with one seed each: no test of training's noise."""
    return d.kind == TRAININGS


def no_spread(d: Interval) -> bool:
    """A paired difference whose per-seed (or per-block) differences are all the same: no test can be made (its p
    is None)."""
    return d.kind in ("paired seeds", "blocks") and d.n >= 2 and d.p is None


def mean_interval(values: Sequence[float], level: float = LEVEL, kind: str = "seeds") -> Interval:
    """The mean of independent values and its t interval; with one value, no interval (kind 'one seed')."""
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, mean, mean, len(values), "one seed")
    half = t_quantile(0.5 + level / 2.0, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values), kind)


def paired_difference(values: dict[int, float], baseline: dict[int, float], level: float = LEVEL) -> Interval | None:
    """values - baseline over the seeds both have: the mean difference and its t interval (None if none shared)."""
    shared = sorted(set(values) & set(baseline))
    if not shared:
        return None
    diffs = [values[s] - baseline[s] for s in shared]
    out = mean_interval(diffs, level, kind="paired seeds")
    if len(diffs) >= 2:
        out.p = t_test(diffs)
    return out


def t_test(diffs: Sequence[float]) -> float | None:
    """The two-sided p-value of a one-sample t test that the mean of `diffs` is zero (at least 2 values); None
    when they have no spread (every one the same): no test can be made, which is not p = 0."""
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd <= 1e-9 * max(abs(mean), 1e-12):  # equal but for rounding: 2.1 - 2.0 and 2.2 - 2.1 differ in the 16th digit
        return None
    t = mean / (sd / math.sqrt(len(diffs)))
    return min(1.0, 2.0 * (1.0 - t_cdf(abs(t), len(diffs) - 1)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for testing them all at once (the family-wise error rate): the
    k-th smallest is multiplied by (m - k + 1), then made non-decreasing in that order; capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * pvalues[i]))
        out[i] = running
    return out


def bootstrap_difference(
    blocks: dict,
    baseline_blocks: dict,
    to_metric: Callable[[float], float] = lambda loss: loss,
    level: float = LEVEL,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """metric(blocks) - metric(baseline) with a paired percentile bootstrap over evaluation blocks.

    Each side is a dict of per-block `loss` sums and `tokens` counts over the same blocks of
    text; a resample draws block indices with replacement and applies them to both sides.
    `to_metric` turns a loss per token into the reported metric (bits per byte, perplexity ...).
    """
    la, ta, lb, tb = blocks["loss"], blocks["tokens"], baseline_blocks["loss"], baseline_blocks["tokens"]
    n = len(la)
    if n != len(lb) or ta != tb:
        raise ValueError(
            "the two results were not evaluated on the same blocks (split, segment length, batch or segments differ)"
        )

    a, b, t = (np.asarray(x, dtype=np.float64) for x in (la, lb, ta))
    idx = _resample_indices(n, resamples, seed)  # the same draws for every pair of one size: drawn once
    tokens = t[idx].sum(axis=1)
    tokens[tokens == 0] = 1.0
    draws = sorted(
        to_metric(x) - to_metric(y)
        for x, y in zip((a[idx].sum(axis=1) / tokens).tolist(), (b[idx].sum(axis=1) / tokens).tolist())
    )
    k = int(round((1.0 - level) / 2.0 * resamples))  # round, not floor: (1 - 0.9) / 2 * 2000 is 99.999...
    whole = sum(ta) or 1.0
    mean = to_metric(sum(la) / whole) - to_metric(sum(lb) / whole)
    return Interval(mean, draws[k], draws[resamples - 1 - k], n, "blocks", _normal_p(mean, statistics.stdev(draws)))


@functools.lru_cache(maxsize=8)
def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """`resamples` draws of n block indices with replacement (rows), from random.Random(seed): every pair of a
    report compares the same blocks, so one set of draws serves them all."""
    rng = random.Random(seed)
    out = np.array([[rng.randrange(n) for _ in range(n)] for _ in range(resamples)], dtype=np.int64)
    out.flags.writeable = False
    return out


def _normal_p(mean: float, se: float) -> float | None:
    """The two-sided p-value of 'no difference' from a difference and its bootstrap standard error (the normal
    approximation over the blocks). Not a count of resamples beyond zero: that could never go below
    2 / (resamples + 1), so with Holm's correction over more than a few dozen pairs no difference, however large,
    would be beyond the noise. None when the blocks differ by the same amount in every resample, zero included (no
    spread: no test, as t_test says of seeds that differ by the same)."""
    if se <= 1e-12 * max(abs(mean), 1e-12):
        return None
    return math.erfc(abs(mean) / se / math.sqrt(2.0))
