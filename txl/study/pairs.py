"""Every pair of variants compared, with Holm's correction: the evidence an ordering needs.

A report compares each variant with one baseline. A claim such as "fewer long-range layers cost
more" orders variants among themselves, so it needs each pair's paired difference; and because
many pairs are tested at once, their p-values are adjusted for the number of tests by Holm's
step-down method, which keeps the chance of any false "beyond noise" among them at 5%.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from txl.core.io import atomic_write_text
from txl.core.stats import Interval, holm, no_spread, untested_trainings
from txl.core.table import render_table
from txl.study.groups import HIGHER_IS_BETTER, Group, difference, references

ALPHA = 0.05


@dataclass
class Pair:
    """a's metric minus b's (paired by seed, or over evaluation blocks with one seed), and its adjusted p-value."""

    a: str
    b: str
    group: str
    diff: Interval | None
    p_holm: float | None = None

    @property
    def beyond_noise(self) -> bool | None:
        return None if self.p_holm is None else self.p_holm < ALPHA


def pairwise(groups: list[Group], metric: str, baseline: str | None = None) -> list[Pair]:
    """Like with like: each pair of variants of the same task group and kind (trained with trained, cut with cut,
    adapted with adapted), and each variant with its reference (txl.study.groups.references: an evaluation-time plan
    with the model it cuts, an adapted one with the adapted control); the better mean first. Holm's adjustment
    runs over every pair of the table."""
    sign = -1 if metric in HIGHER_IS_BETTER else 1
    pairs, seen = [], set()

    def add(a: Group, b: Group, group: str) -> None:
        a, b = sorted((a, b), key=lambda g: sign * g.mean)
        if frozenset((a.variant, b.variant)) not in seen:
            seen.add(frozenset((a.variant, b.variant)))
            pairs.append(Pair(a.variant, b.variant, group, difference(a, b, metric)))

    for name, kind in dict.fromkeys((g.group, g.kind) for g in groups):
        ranked = sorted((g for g in groups if (g.group, g.kind) == (name, kind)), key=lambda g: sign * g.mean)
        for i, a in enumerate(ranked):
            for b in ranked[i + 1 :]:
                add(a, b, name)
    refs = references(groups, baseline)
    for g, ref in ((g, refs.get(g.variant)) for g in groups):
        if ref is not None:
            add(g, ref, g.group)
    adjust(pairs)
    return pairs


def adjust(pairs: list[Pair]) -> None:
    """Holm's adjustment over every tested pair of `pairs` (pairs without spread or data are not tested)."""
    tested = [p for p in pairs if p.diff is not None and p.diff.p is not None]
    for pair, adjusted in zip(tested, holm([p.diff.p for p in tested])):
        pair.p_holm = adjusted


def pairs_table(pairs: list[Pair], metric: str, fmt: str = "text") -> str:
    """One row per pair: the difference and its 95% interval, what it is over, the raw and the adjusted p."""
    grouped = len({p.group for p in pairs}) > 1
    shown = fmt in ("text", "markdown")  # numbers for CSV and LaTeX; a p below 0.001 is never shown as 0.000

    def pv(x: float | None):
        return x if not shown or x is None else (f"{x:.3f}" if x >= 0.001 else "<0.001")

    rows = []
    for p in pairs:
        d = p.diff
        cells = [p.a, p.b]
        if d is None:
            cells += ["-", "no shared seed or blocks", None, None, "-"]
        else:
            flat = no_spread(d)  # every seed differs by the same: not tested
            if flat or untested_trainings(d):
                verdict = "no spread: not tested" if flat else "one seed each: not tested"
            else:
                verdict = "-" if p.beyond_noise is None else ("yes" if p.beyond_noise else "no")
            cells += [
                f"{d.mean:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}]",
                f"{d.kind}, n={d.n}" + (", no spread" if flat else ""),
                pv(d.p),
                pv(p.p_holm),
                verdict,
            ]
        rows.append(([p.group] if grouped else []) + cells)
    headers = ["better", "worse", f"{metric} difference [95%]", "over", "p", "p (Holm)", "beyond noise (Holm)"]
    return render_table((["group"] if grouped else []) + headers, rows, fmt)


def pairs_legend(pairs: list[Pair], tested: int | None = None, together: str = "") -> str:
    """What the pairs table says; `tested`: the pairs Holm's adjustment ran over (by default, these), `together`
    what they were (" of 2 experiments")."""
    tested = sum(p.p_holm is not None for p in pairs) if tested is None else tested
    return (
        f"Each pair: the better mean first, its difference from the worse (paired seeds: t; one seed: a block "
        f"bootstrap, data noise only, p from its standard error; two models trained apart with one seed each are "
        f"not tested). 'beyond noise (Holm)': p < {ALPHA} after Holm's "
        f"adjustment over the {tested} pairs{together} tested at once."
    )


def write_pairs(
    pairs: list[Pair], metric: str, folder: Path, stem: str = "pairs", legend: str | None = None
) -> dict[str, Path]:
    """The pairs table as STEM.md (with its legend) and STEM.csv in `folder`."""
    files = {"pairs": folder / f"{stem}.md", "pairs csv": folder / f"{stem}.csv"}
    markdown = pairs_table(pairs, metric, "markdown")
    atomic_write_text(files["pairs"], f"{markdown}\n\n{legend or pairs_legend(pairs)}\n")
    atomic_write_text(files["pairs csv"], pairs_table(pairs, metric, "csv") + "\n")
    return files
