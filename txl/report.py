"""Reports from a results table alone: quality against memory budget, seeds aggregated, the Pareto frontier marked."""

from __future__ import annotations

from pathlib import Path

from txl.groups import HIGHER_IS_BETTER, X_AXES, Group, aggregate, difference, headline_metric
from txl.io import atomic_write_text
from txl.report_figures import report_plot, write_hparams
from txl.results import ResultRow
from txl.stats import Interval, no_spread
from txl.table import format_table, render_table, whole


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


def compare_with_baseline(groups: list[Group], metric: str, baseline: str | None) -> Group | None:
    """Each variant's difference from the baseline of its task group, paired by seed.

    With two or more shared seeds: t over the per-seed differences. With one: a paired
    bootstrap over evaluation blocks, when both rows carry the same blocks.
    """
    bases: dict[str, Group] = {}
    for g in groups:  # each task group is compared with its own first trained variant ...
        if g.kind == "train":
            bases.setdefault(g.group, g)
    named = next((g for g in groups if g.variant == baseline), None)
    if named is not None:  # ... unless the experiment names one
        bases[named.group] = named
    if not bases:
        return None
    for g in groups:
        base = bases.get(g.group)
        if base is None or g is base:
            continue
        g.vs_baseline = difference(g, base, metric)
    return named if named is not None or len(bases) > 1 else next(iter(bases.values()))


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


def _beyond(d: Interval | None) -> str:
    """Whether a difference's interval excludes zero; 'no spread' where every seed differs by the same (no test)."""
    if d is None:
        return "-"
    if no_spread(d):
        return "no spread"
    return "yes" if d.excludes_zero else "no"


def report_table(
    groups: list[Group], metric: str, x_axis: str, markdown: bool = False, baseline: str | None = None
) -> str:
    grouped = len({g.group for g in groups}) > 1
    compared = any(g.vs_baseline is not None for g in groups)
    rows = []
    for g in groups:
        row = ([g.group] if grouped else []) + [
            g.variant,
            g.kind,
            g.plan["memory"],
            g.plan["range"],
            g.plan["attn"],
            g.budget["cached_positions"],
            g.budget["memory_bytes"] / 2**20,
            whole(g.budget["receptive_field"]),
            _interval_text(g.interval),
            len(g.values),
        ]
        if compared:
            d = g.vs_baseline
            row += [
                _interval_text(d, signed=True),
                "-" if d is None else f"{d.kind}, n={d.n}",
                _beyond(d),
            ]
        row.append("*" if g.pareto else ("~" if g.near_frontier else ""))
        at = (1 if grouped else 0) + 5  # memory dtypes and sinks, where used: beside the plan's other columns
        row[at:at] = [g.plan.get(d, default) for d, _, default in _optional(groups)]
        rows.append(row)
    headers = [
        "variant",
        "kind",
        "memory",
        "range",
        "attn",
        "cached",
        "MiB/seq",
        "receptive field",
        f"{metric} [95% interval]",
        "seeds",
    ]
    if compared:
        headers += [f"- {baseline or 'baseline'} [95%]", "interval over", "beyond noise"]
    headers.append("pareto")
    headers[5:5] = [title for _, title, _ in _optional(groups)]
    return format_table((["group"] if grouped else []) + headers, rows, markdown)


def export_rows(groups: list[Group], metric: str, baseline: str | None = None) -> tuple[list[str], list[list]]:
    """The report as raw numbers (intervals as separate columns), for CSV and LaTeX."""
    headers = [
        "group",
        "variant",
        "kind",
        "memory",
        "range",
        "attn",
        "cached_positions",
        "memory_mib",
        "receptive_field",
        metric,
        f"{metric}_lo",
        f"{metric}_hi",
        "seeds",
        "interval",
        f"minus_{baseline or 'baseline'}",
        "diff_lo",
        "diff_hi",
        "diff_interval",
        "beyond_noise",
        "pareto",
    ]
    headers[6:6] = [title.replace(" ", "_") for _, title, _ in _optional(groups)]
    rows = []
    for g in groups:
        i, d = g.interval, g.vs_baseline
        rows.append(
            [
                g.group,
                g.variant,
                g.kind,
                g.plan["memory"],
                g.plan["range"],
                g.plan["attn"],
                g.budget["cached_positions"],
                g.budget["memory_bytes"] / 2**20,
                whole(g.budget["receptive_field"]),
                i.mean,
                None if i.kind == "one seed" else i.lo,
                None if i.kind == "one seed" else i.hi,
                len(g.values),
                i.kind,
                None if d is None else d.mean,
                None if d is None or d.kind == "one seed" else d.lo,
                None if d is None or d.kind == "one seed" else d.hi,
                None if d is None else d.kind,
                None if d is None else d.excludes_zero,
                "frontier" if g.pareto else ("near" if g.near_frontier else ""),
            ]
        )
        rows[-1][6:6] = [g.plan.get(d, default) for d, _, default in _optional(groups)]
    return headers, rows


# plan dimensions a report shows only when a variant uses them (its plan then names them): name, title, default
OPTIONAL = (("dtype", "stored as", "fp32"), ("sinks", "sinks", "0"), ("compress", "compressed", "0"))


def _optional(groups: list[Group]) -> list[tuple[str, str, str]]:
    return [o for o in OPTIONAL if any(o[0] in g.plan for g in groups)]


def build_report(
    rows: list[ResultRow],
    title: str,
    out_dir: Path,
    x_axis: str = "cached_positions",
    plot: bool = True,
    baseline: str | None = None,
    stem: str = "report",
) -> dict:
    """Table (terminal and Markdown), plot (PNG and SVG) and hparams, from result rows alone, written to
    out_dir/STEM.{md,csv,tex,png,svg} (and TensorBoard hparams in tb-hparams, or STEM-tb-hparams)."""
    metric = headline_metric(rows)
    order = {name: i for i, name in enumerate(dict.fromkeys(r.group for r in rows))}  # groups as first seen
    groups = aggregate(rows, metric)  # in the order the experiment lists its variants: a group's first is its baseline
    base = compare_with_baseline(groups, metric, baseline)
    groups.sort(key=lambda g: (order[g.group], g.budget[x_axis], g.variant))
    mark_pareto(groups, metric, x_axis)
    name = base.variant if base else ("its group's first" if any(g.vs_baseline for g in groups) else None)
    notes = legend(metric, x_axis, name) + seed_note(groups)
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
        write_hparams(rows, metric, files["tensorboard"])
    return {
        "metric": metric,
        "groups": groups,
        "table": text,
        "markdown": markdown,
        **exports,
        "files": files,
        "legend": notes,
    }


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


def legend(metric: str, x_axis: str, baseline: str | None) -> str:
    """What the table's marks and intervals mean."""
    lines = [
        f"`*` marks the Pareto frontier of mean {metric} against {X_AXES.get(x_axis, x_axis)}; `~` a variant off it "
        "whose interval overlaps that of a frontier point no more expensive.",
        f"{metric} [95% interval]: Student's t over seeds (one seed: no interval).",
    ]
    if baseline:
        lines.append(
            f"- {baseline}: the paired difference from {baseline} (same seed, same data): t over per-seed differences "
            "('paired seeds'), or with one seed a paired bootstrap over contiguous evaluation blocks ('blocks', data "
            "noise only); 'beyond noise' when the interval excludes zero."
        )
    return "\n".join(lines)
