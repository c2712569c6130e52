"""The report's figures: quality against budget with intervals and Pareto frontiers, and TensorBoard's hparams."""

from __future__ import annotations

import math
from pathlib import Path

from txl.core.io import pyplot, save_figure
from txl.core.table import whole
from txl.study.groups import HIGHER_IS_BETTER, X_AXES, Group
from txl.study.results import ResultRow


def _yerr(g: Group):
    i = g.interval
    return None if i is None or i.kind == "one seed" else [[g.mean - i.lo], [i.hi - g.mean]]


MARKERS = {"train": "o", "eval": "s", "adapt": "^"}


def _legend_handles(colours: dict | None, one_budget: bool, adapted: bool = False) -> list:
    """The legend's entries: the two kinds of plan, and each group's frontier."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color="gray", label="trained with this plan"),
        Line2D([], [], marker="s", linestyle="", color="gray", label="plan applied at evaluation"),
    ]
    if adapted:
        handles.append(Line2D([], [], marker="^", linestyle="", color="gray", label="adapted to the plan"))
    if not one_budget:
        if colours:
            handles += [
                Line2D([], [], color=c, marker="o", label=f"{name}: Pareto frontier") for name, c in colours.items()
            ]
        else:
            handles.append(Line2D([], [], color="tab:red", label="Pareto frontier"))
    return handles


def _label_offsets(xs: list[float], ys: list[float], near: float = 0.04) -> list[tuple[int, int]]:
    """Where each point's label goes (points of text from its marker): points that nearly coincide (within
    `near` of both axes' spans) get their labels fanned out one above the other in the order of their values, the
    highest on top, so each leader line runs to its own marker without crossing another's."""

    def spread(values: list[float]) -> list[float]:
        finite = [v for v in values if math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        return [(v - lo) / ((hi - lo) or 1.0) if math.isfinite(v) else 0.0 for v in values]

    px = spread([math.log1p(max(x, 0.0)) for x in xs])
    py = spread(ys)
    clusters: list[list[int]] = []
    for i in sorted(range(len(xs)), key=lambda i: (px[i], -py[i])):
        home = next(
            (c for c in clusters if any(abs(px[i] - px[j]) < near and abs(py[i] - py[j]) < near for j in c)), None
        )
        if home is None:
            clusters.append([i])
        else:
            home.append(i)
    offsets: list[tuple[int, int]] = [(8, 10)] * len(xs)
    for c in clusters:
        for rank, i in enumerate(sorted(c, key=lambda i: -py[i])):
            offsets[i] = (10, 12 - 11 * rank) if len(c) > 1 else (8, 10 if i % 2 else -14)
    return offsets


def report_plot(groups: list[Group], metric: str, x_axis: str, title: str, paths: list[Path]) -> None:
    """Quality against budget with 95% intervals over seeds; the Pareto frontier drawn through the means.

    When every variant has the same budget, quality is drawn by variant instead (the budget axis
    would stack them on one x).
    """
    import textwrap

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = [g.budget[x_axis] for g in groups]
    one_budget = len(groups) > 1 and len(set(xs)) == 1
    names = list(dict.fromkeys(g.group for g in groups))
    # one group: off-frontier blue, frontier red; several: a colour per group, frontier points filled
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)} if len(names) > 1 else None
    for n, (g, x) in enumerate(zip(groups, xs)):
        colour = colours[g.group] if colours else ("tab:red" if g.pareto else "tab:blue")
        at = n if one_budget else x
        ax.errorbar(
            at,
            g.mean,
            yerr=_yerr(g),
            fmt=MARKERS.get(g.kind, "s"),
            color=colour,
            markerfacecolor=colour if (g.pareto or not colours) else "white",
            capsize=3,
            markersize=6,
        )
    if not one_budget:
        for g, x, offset in zip(groups, xs, _label_offsets(xs, [g.mean for g in groups])):
            ax.annotate(  # a thin line ties each label to its own marker, however close the markers sit
                g.variant,
                (x, g.mean),
                textcoords="offset points",
                xytext=offset,
                fontsize=7,
                arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "gray", "shrinkA": 0, "shrinkB": 2},
            )
    if one_budget:
        ax.set_xticks(range(len(groups)), [g.variant for g in groups], rotation=20, fontsize=8)
        ax.set_xlabel(f"variant (all at {whole(xs[0])} {X_AXES.get(x_axis, x_axis)})")
    else:
        for name in names:
            front = sorted((x, g.mean) for g, x in zip(groups, xs) if g.pareto and g.group == name)
            if len(front) > 1:
                ax.plot(*zip(*front), color=colours[name] if colours else "tab:red", linewidth=1, alpha=0.6)
        positive = [x for x in xs if x > 0 and math.isfinite(x)]
        if positive and max(positive) / min(positive) > 20:
            ax.set_xscale("symlog", linthresh=min(positive))  # zero stays at zero, the rest spreads logarithmically
        ax.set_xlabel(X_AXES.get(x_axis, x_axis))
    handles = _legend_handles(colours, one_budget, any(g.kind == "adapt" for g in groups))
    bars = "bars: 95% interval over seeds" if any(len(g.values) > 1 for g in groups) else "one seed: no interval bars"
    ax.legend(handles=handles, fontsize=7, title=bars, title_fontsize=7)
    ax.set_ylabel(metric + (" (higher is better)" if metric in HIGHER_IS_BETTER else " (lower is better)"))
    ax.ticklabel_format(axis="y", useOffset=False)  # 7.8519, not 1e-6+7.8519
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, *paths)


def write_hparams(rows: list[ResultRow], metric: str, folder: Path) -> None:
    """Every result in TensorBoard's HPARAMS view (rewritten from the table each time)."""
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(folder, ignore_errors=True)
    for r in rows:
        writer = SummaryWriter(str(folder / f"{r.variant}-seed{r.seed}"))
        hp = {
            "variant": r.variant,
            "group": r.group,
            "kind": r.kind,
            **{k: r.plan[k] for k in ("memory", "range", "attn")},
        }
        hp["seed"] = r.seed
        m = {
            f"hparam/{metric}": float(r.metrics[metric]),
            "hparam/cached_positions": float(r.budget["cached_positions"]),
            "hparam/memory_mib": r.budget["memory_bytes"] / 2**20,
        }
        writer.add_hparams(hp, m, run_name=".")
        writer.close()
