"""All seeds of one variant as a group: its values, intervals and rows, and a group's paired difference from another.

What a report, a plot and the pairwise comparison share; the metrics and budget axes are named here once.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from txl.core.stats import TRAININGS, Interval, bootstrap_difference, mean_interval, paired_difference
from txl.study.results import ResultRow

METRICS = ("accuracy", "ppl", "bpc", "bpb", "loss")  # the first one a row has is its headline
HIGHER_IS_BETTER = {"accuracy"}
X_AXES = {
    "cached_positions": "cached positions per sequence",
    "long_range_positions": "positions in the longest-memory layers",
    "memory_bytes": "memory bytes per sequence",
    "attn_flops_per_token": "attention FLOPs per token",
    "receptive_field": "receptive field (tokens)",
}


def headline_metric(rows: list[ResultRow]) -> str:
    for m in METRICS:
        if rows and all(m in r.metrics for r in rows):
            return m
    return "loss"


@dataclass
class Group:
    """All seeds of one variant."""

    variant: str
    kind: str
    plan: dict
    budget: dict
    values: list[float]
    group: str = ""  # variants on the same task; each group has its own frontier
    pareto: bool = False
    by_seed: dict[int, float] = field(default_factory=dict)  # the metric per seed
    rows: dict[int, ResultRow] = field(default_factory=dict)  # the result row per seed (blocks, loss)
    interval: Interval | None = None  # of the mean over seeds
    vs_baseline: Interval | None = None  # the paired difference from the baseline variant
    near_frontier: bool = False  # off the frontier, but its interval reaches a frontier point's
    of: str | None = None  # the trained variant an evaluation or adaptation starts from
    reference: str | None = None  # the variant vs_baseline is measured against (txl.study.groups.references)
    p_holm: float | None = None  # vs_baseline's p after Holm's adjustment over the table's pairs (txl.study.pairs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def spread(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def aggregate(rows: list[ResultRow], metric: str) -> list[Group]:
    """One group per variant in the order first seen; the latest row wins when a (variant, seed) repeats."""
    latest: dict[tuple[str, int], ResultRow] = {}
    for r in rows:
        latest[(r.variant, r.seed)] = r
    groups: dict[str, Group] = {}
    for (variant, seed), r in latest.items():
        g = groups.setdefault(variant, Group(variant, r.kind, r.plan, r.budget, [], r.group, of=r.of))
        g.values.append(float(r.metrics[metric]))
        g.by_seed[seed], g.rows[seed] = float(r.metrics[metric]), r
    for g in groups.values():
        g.interval = mean_interval(g.values)
        plans = {r.plan["memory"] for r in g.rows.values()}
        if len(plans) > 1:  # a plan searched per seed: the same budget, a plan of each seed's own
            g.plan = {**g.plan, "memory": f"one per seed ({len(plans)} differ)"}
            # the reach every seed's plan guarantees; costs are the same by construction (one budget)
            g.budget = {**g.budget, "receptive_field": min(r.budget["receptive_field"] for r in g.rows.values())}
    return list(groups.values())


def references(groups: list[Group], baseline: str | None = None) -> dict[str, Group]:
    """What each variant is compared with, like with like: an adapted variant with the control adapted from the
    same model under that model's own plan (for the same steps), where there is one; an evaluation-time plan with
    the model it cuts; another variant of the named baseline's task group with that baseline; an adapted variant
    without a control with its source; a trained one with its task group's first trained one. A variant that is
    its own reference is left out."""
    by_name = {g.variant: g for g in groups}
    named = by_name.get(baseline) if baseline else None
    first: dict[str, Group] = {}
    for g in groups:
        if g.kind == "train":
            first.setdefault(g.group, g)
    controls: dict[str, Group] = {}
    for g in groups:
        source = by_name.get(g.of) if g.of else None
        if g.kind == "adapt" and source is not None and g.plan == source.plan:
            controls.setdefault(source.variant, g)
    out = {}
    for g in groups:
        if g.kind == "adapt" and g.of in controls and controls[g.of] is not g:
            ref = controls[g.of]
        elif g.kind == "eval" and g.of in by_name:
            ref = by_name[g.of]
        elif named is not None and named.group == g.group:
            ref = named
        elif g.kind == "adapt" and g.of in by_name:
            ref = by_name[g.of]
        else:
            ref = first.get(g.group)
        if ref is not None and ref is not g:
            out[g.variant] = ref
    return out


def _to_metric(row: ResultRow, metric: str) -> Callable[[float], float] | None:
    """How a loss per token becomes this row's metric, for the block bootstrap (None: it cannot)."""
    loss = row.metrics.get("loss")
    if metric == "ppl":
        return lambda x: math.exp(min(x, 700))
    if metric in ("bpb", "bpc", "loss") and loss:
        factor = row.metrics[metric] / loss
        return lambda x: x * factor
    return None


def difference(g: Group, base: Group, metric: str) -> Interval | None:
    """g's metric minus base's, paired: t over the seeds both have (two or more), or with one shared seed a block
    bootstrap over the evaluation text (when both rows carry the same blocks); None when neither can be made. Two
    trained models with one seed each get the bootstrap's interval but no test (kind TRAININGS): the data's noise
    is not the noise between two trainings."""
    shared = sorted(set(g.by_seed) & set(base.by_seed))
    if len(shared) >= 2:
        return paired_difference(g.by_seed, base.by_seed)
    if not shared:
        return None
    row, ref = g.rows[shared[0]], base.rows[shared[0]]
    to_metric = _to_metric(row, metric)
    if to_metric is None or not (row.blocks and ref.blocks):
        return None
    try:
        d = bootstrap_difference(row.blocks, ref.blocks, to_metric)
    except ValueError:
        return None
    if g.kind == base.kind == "train":  # two trainings: the blocks hold the data's noise, not training's
        d.kind, d.p = TRAININGS, None
    return d
