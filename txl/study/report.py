"""Reports from a results table alone: quality against memory budget, seeds aggregated, the Pareto frontier marked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from txl.core.io import atomic_write_text
from txl.core.stats import Interval, no_spread, untested_trainings
from txl.core.table import format_table, render_table, whole
from txl.model.dimensions import default_text, optional
from txl.study.figures import report_plot, write_hparams
from txl.study.groups import HIGHER_IS_BETTER, X_AXES, Group, aggregate, difference, headline_metric, references
from txl.study.pairs import ALPHA, pairwise
from txl.study.results import ResultRow


def rows_of_split(rows: list[ResultRow], split: str | None = None) -> tuple[str | None, list[ResultRow]]:
    """The rows scored on one split, so a report never mixes choosing (valid) with reporting (test): `split`,
    or by default valid where there is any, else the one split the rows have."""
    present = list(dict.fromkeys(r.split for r in rows))
    if split is None:
        split = "valid" if "valid" in present else (present[0] if present else None)
    return split, [r for r in rows if r.split == split]


def superseded(rows: list[ResultRow]) -> list[str]:
    """(variant, seed) pairs with rows of more than one configuration (a definition or an override changed
    between runs): the report shows the latest, and says so."""
    hashes: dict[tuple[str, int], set[str]] = {}
    for r in rows:
        hashes.setdefault((r.variant, r.seed), set()).add(r.config_hash)
    return [f"{v} seed {s}" for (v, s), h in hashes.items() if len(h) > 1]


def compare_with_references(groups: list[Group], metric: str, baseline: str | None) -> str | None:
    """Each variant's difference from its reference (txl.study.groups.references: like with like), paired by seed.

    With two or more shared seeds: t over the per-seed differences. With one: a paired bootstrap over evaluation
    blocks, when both rows carry the same blocks. Returns the reference's name when every variant has the same one
    (the table's column then names it), else None (a column names each row's)."""
    refs = references(groups, baseline)
    for g in groups:
        ref = refs.get(g.variant)
        if ref is not None:
            g.vs_baseline, g.reference = difference(g, ref, metric), ref.variant
    names = {g.reference for g in groups if g.reference}
    return names.pop() if len(names) == 1 else None


def mark_pareto(groups: list[Group], metric: str, x_axis: str) -> None:
    """A variant is on the frontier if no other of its group is at least as cheap and at least as good,
    and better in one.

    Groups are tasks: a plan that is cheap on an easy task does not dominate one on a hard task.
    The frontier is drawn through means; a variant off it whose interval reaches the interval of
    a frontier point no more expensive than itself is marked `near_frontier` (within the noise).
    """
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
    for g in groups:
        gx, gy = g.budget[x_axis], sign * g.mean
        g.pareto = not any(
            (h.budget[x_axis] <= gx and sign * h.mean <= gy) and (h.budget[x_axis] < gx or sign * h.mean < gy)
            for h in groups
            if h is not g and h.group == g.group
        )
    for g in groups:
        if g.pareto or g.interval is None or g.interval.kind == "one seed":
            continue
        g.near_frontier = any(
            h.pareto
            and h.group == g.group
            and h.budget[x_axis] <= g.budget[x_axis]
            and h.interval is not None
            and g.interval.lo <= h.interval.hi
            and h.interval.lo <= g.interval.hi
            for h in groups
        )


def _interval_text(i: Interval | None, signed: bool = False) -> str:
    """'2.3153 [2.3001, 2.3305]', with more decimals where a number that is not zero would show as 0.0000 (a
    difference 'beyond the noise' is never printed as -0.0000 [-0.0000, -0.0000])."""
    if i is None:
        return "-"
    shown = [i.mean] if i.kind == "one seed" else [i.mean, i.lo, i.hi]
    places = 4
    while places < 8 and any(x != 0 and round(abs(x), places) == 0 for x in shown):
        places += 1
    fmt = ("{:+." if signed else "{:.") + f"{places}f}}"
    if i.kind == "one seed":
        return fmt.format(i.mean)
    return f"{fmt.format(i.mean)} [{fmt.format(i.lo)}, {fmt.format(i.hi)}]"


def beyond(g: Group) -> bool | None:
    """Whether a variant's difference from its reference is beyond the noise: p < ALPHA after Holm's adjustment over
    the table's pairs (None: no test, as when every seed differs by the same or two trainings have one seed each)."""
    return None if g.p_holm is None else g.p_holm < ALPHA


def _beyond(g: Group) -> str:
    """beyond(g) as shown, saying why a difference is not tested."""
    d = g.vs_baseline
    if d is None:
        return "-"
    if no_spread(d):
        return "no spread"
    if untested_trainings(d):
        return "one seed: untested"
    return "-" if beyond(g) is None else ("yes" if beyond(g) else "no")


def _optional(groups: list[Group]) -> list[tuple[str, str, str]]:
    """The plan dimensions a report shows only when a variant uses them (its plan then names them): (name, title,
    default), from the registry (txl.model.dimensions)."""
    return [(n, d.title, default_text(d)) for n, d in optional().items() if any(n in g.plan for g in groups)]


def _share(g: Group) -> float | None:
    """The share of its budget's bytes a variant's memory takes (rows record the budget as limit_bytes)."""
    limit = g.budget.get("limit_bytes")
    return g.budget["memory_bytes"] / limit if limit else None


def _columns(groups: list[Group], metric: str, baseline: str | None, raw: bool) -> list[tuple[str, Callable]]:
    """The report's columns as (title, value of a group): as shown (raw False) or as numbers for CSV and LaTeX."""
    plan = [(k, lambda g, k=k: g.plan[k]) for k in ("memory", "range", "attn")]
    plan += [(title, lambda g, d=d, dflt=dflt: g.plan.get(d, dflt)) for d, title, dflt in _optional(groups)]
    shares = any(_share(g) is not None for g in groups)
    per_row = baseline == "reference"  # each row names what it is compared with
    one = lambda i, end: None if i is None or i.kind == "one seed" else getattr(i, end)  # noqa: E731
    if raw:
        cols = [("group", lambda g: g.group), ("variant", lambda g: g.variant), ("kind", lambda g: g.kind)]
        cols += [(t.replace(" ", "_"), f) for t, f in plan]
        cols += [("cached_positions", lambda g: g.budget["cached_positions"])]
        cols += [("memory_mib", lambda g: g.budget["memory_bytes"] / 2**20)]
        cols += [("budget_share", _share)] if shares else []
        cols += [("receptive_field", lambda g: whole(g.budget["receptive_field"])), (metric, lambda g: g.interval.mean)]
        cols += [(f"{metric}_lo", lambda g: one(g.interval, "lo"))]
        cols += [(f"{metric}_hi", lambda g: one(g.interval, "hi")), ("seeds", lambda g: len(g.values))]
        cols += [(f"{metric}_seed_sd", lambda g: g.spread if len(g.values) > 1 else None)]
        cols += [("interval", lambda g: g.interval.kind)]
        cols += [("reference", lambda g: g.reference)] if per_row else []
        d = lambda g: g.vs_baseline  # noqa: E731
        cols += [(f"minus_{baseline or 'baseline'}", lambda g: None if d(g) is None else d(g).mean)]
        cols += [("diff_lo", lambda g: one(d(g), "lo")), ("diff_hi", lambda g: one(d(g), "hi"))]
        cols += [("diff_interval", lambda g: None if d(g) is None else d(g).kind)]
        cols += [("p_holm", lambda g: g.p_holm), ("beyond_noise", beyond)]
        return cols + [("pareto", lambda g: "frontier" if g.pareto else ("near" if g.near_frontier else ""))]
    cols = ([("group", lambda g: g.group)] if len({g.group for g in groups}) > 1 else []) + [
        ("variant", lambda g: g.variant),
        ("kind", lambda g: g.kind),
    ]
    cols += plan + [("cached", lambda g: g.budget["cached_positions"])]
    cols += [("MiB/seq", lambda g: g.budget["memory_bytes"] / 2**20)]
    cols += [("share", lambda g: "-" if _share(g) is None else f"{_share(g):.2f}")] if shares else []
    cols += [("receptive field", lambda g: whole(g.budget["receptive_field"]))]
    cols += [(f"{metric} [95% interval]", lambda g: _interval_text(g.interval)), ("seeds", lambda g: len(g.values))]
    if any(len(g.values) > 1 for g in groups):  # the spread of the trained models, beside the interval of their mean
        cols += [("seed SD", lambda g: f"{g.spread:.4f}" if len(g.values) > 1 else "-")]
    if any(g.vs_baseline is not None for g in groups):
        cols += [("reference", lambda g: g.reference or "-")] if per_row else []
        cols += [(f"- {baseline or 'baseline'} [95%]", lambda g: _interval_text(g.vs_baseline, signed=True))]
        cols += [
            ("interval over", lambda g: "-" if g.vs_baseline is None else f"{g.vs_baseline.kind}, n={g.vs_baseline.n}")
        ]
        cols += [("beyond noise (Holm)", _beyond)]
    return cols + [("pareto", lambda g: "*" if g.pareto else ("~" if g.near_frontier else ""))]


def report_table(
    groups: list[Group], metric: str, x_axis: str, markdown: bool = False, baseline: str | None = None
) -> str:
    cols = _columns(groups, metric, baseline, raw=False)
    return format_table([t for t, _ in cols], [[f(g) for _, f in cols] for g in groups], markdown)


def export_rows(groups: list[Group], metric: str, baseline: str | None = None) -> tuple[list[str], list[list]]:
    """The report as raw numbers (intervals as separate columns), for CSV and LaTeX."""
    cols = _columns(groups, metric, baseline, raw=True)
    return [t for t, _ in cols], [[f(g) for _, f in cols] for g in groups]


def assemble(
    rows: list[ResultRow],
    x_axis: str = "cached_positions",
    baseline: str | None = None,
    group_order: list[str] | None = None,
) -> dict:
    """A report's numbers from result rows alone, before anything is written: the variants (aggregated over seeds,
    each read against its reference, in the experiment's order, the frontier marked) and every pair of the table
    (txl.study.pairs.pairwise), Holm-adjusted over those pairs. Reports shown together pool their pairs and adjust
    them again (txl.study.pairs.adjust) before write_report; the table's 'beyond noise' is that pair's verdict.
    Task groups come in `group_order` (the experiment's), then as first seen."""
    metric = headline_metric(rows)
    order = {name: i for i, name in enumerate(dict.fromkeys([*(group_order or []), *(r.group for r in rows)]))}
    groups = aggregate(rows, metric)  # in the order the experiment lists its variants: a group's first is its baseline
    one = compare_with_references(groups, metric, baseline)
    kinds = {"train": 0, "eval": 1, "adapt": 2}  # within a task group: trained, then cut, then adapted
    groups.sort(key=lambda g: (order[g.group], kinds.get(g.kind, 3), g.budget[x_axis], g.variant))
    mark_pareto(groups, metric, x_axis)
    name = one or ("reference" if any(g.reference for g in groups) else None)
    pairs = pairwise(groups, metric, baseline)
    return {"metric": metric, "groups": groups, "pairs": pairs, "baseline": name, "rows": rows, "x_axis": x_axis}


def write_report(
    report: dict, title: str, out_dir: Path, plot: bool = True, stem: str = "report", tested: int | None = None
) -> dict:
    """Table (terminal and Markdown), plot (PNG and SVG) and hparams of an assembled report, written to
    out_dir/STEM.{md,csv,tex,png,svg} (and TensorBoard hparams in tb-hparams, or STEM-tb-hparams); `tested`: the
    number of pairs Holm's adjustment ran over (by default, the report's own). Returns the report with its texts."""
    metric, groups, name, x_axis = report["metric"], report["groups"], report["baseline"], report["x_axis"]
    adjusted = {frozenset((p.a, p.b)): p.p_holm for p in report["pairs"]}
    for g in groups:
        g.p_holm = adjusted.get(frozenset((g.variant, g.reference))) if g.reference else None
    tested = sum(p.p_holm is not None for p in report["pairs"]) if tested is None else tested
    notes = legend(metric, x_axis, name, tested) + seed_note(groups)
    text = report_table(groups, metric, x_axis, baseline=name)
    markdown = report_table(groups, metric, x_axis, markdown=True, baseline=name)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out_dir / f"{stem}.md"}
    atomic_write_text(files["markdown"], f"# {title}\n\n{markdown}\n\n{notes}\n")
    headers, raw = export_rows(groups, metric, name)
    exports = {fmt: render_table(headers, raw, fmt) for fmt in ("csv", "latex")}
    files["csv"], files["latex"] = out_dir / f"{stem}.csv", out_dir / f"{stem}.tex"
    atomic_write_text(files["csv"], exports["csv"] + "\n")
    atomic_write_text(files["latex"], f"% {title}\n" + exports["latex"] + "\n")
    if plot:
        files["png"], files["svg"] = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
        report_plot(groups, metric, x_axis, title, [files["png"], files["svg"]])
        files["tensorboard"] = out_dir / ("tb-hparams" if stem == "report" else f"{stem}-tb-hparams")
        write_hparams(report["rows"], metric, files["tensorboard"])
    return {**report, "table": text, "markdown": markdown, **exports, "files": files, "legend": notes}


def build_report(
    rows: list[ResultRow],
    title: str,
    out_dir: Path,
    x_axis: str = "cached_positions",
    plot: bool = True,
    baseline: str | None = None,
    stem: str = "report",
    group_order: list[str] | None = None,
) -> dict:
    """assemble, then write_report: one experiment's report, its pairs adjusted among themselves."""
    return write_report(assemble(rows, x_axis, baseline, group_order), title, out_dir, plot, stem)


def seed_note(groups: list[Group]) -> str:
    """A line when variants were measured over different numbers of seeds (their means are not alike), else ''."""
    counts: dict[int, list[str]] = {}
    for g in groups:
        counts.setdefault(len(g.values), []).append(g.variant)
    if len(counts) < 2:
        return ""
    parts = [
        f"{len(names)} over {n} ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})"
        for n, names in sorted(counts.items())
    ]
    return (
        "\nseeds differ between variants: "
        + "; ".join(parts)
        + ". Means over fewer seeds are noisier; 'txl run --seeds N' fills in the rest."
    )


def legend(metric: str, x_axis: str, baseline: str | None, tested: int = 0) -> str:
    """What the table's marks and intervals mean."""
    lines = [
        f"`*` marks the Pareto frontier of mean {metric} against {X_AXES.get(x_axis, x_axis)}; `~` a variant off it "
        "whose interval overlaps that of a frontier point no more expensive.",
        f"{metric} [95% interval]: Student's t over seeds (one seed: no interval); seed SD: the standard deviation "
        "of the seeds' values (shown when a variant has several).",
    ]
    if baseline:
        lines.append(
            f"- {baseline}: the paired difference from {baseline} (same seed, same data): t over per-seed differences "
            "('paired seeds'), or with one seed a paired bootstrap over contiguous evaluation blocks ('blocks', data "
            f"noise only); 'beyond noise (Holm)': p < {ALPHA} after Holm's adjustment over the {tested} pairs tested "
            "at once (every pair of the table, txl report --pairs); two models trained apart with one seed each "
            "are not tested ('one seed: untested'): the data's noise is not the noise between two trainings."
        )
    return "\n".join(lines)
