"""Reports from a results table alone: quality against memory budget, seeds aggregated, the Pareto frontier marked."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from txl.io import atomic_path, atomic_write_text
from txl.table import format_table

METRICS = ("accuracy", "ppl", "bpc", "bpb", "loss")  # the first one a row has is its headline
HIGHER_IS_BETTER = {"accuracy"}
X_AXES = {
    "cached_positions": "cached positions per sequence",
    "long_range_positions": "positions in the longest-memory layers",
    "memory_bytes": "memory bytes per sequence",
    "attn_flops_per_token": "attention FLOPs per token",
    "receptive_field": "receptive field (tokens)",
}


def headline_metric(rows: list[dict]) -> str:
    for m in METRICS:
        if rows and all(m in r["metrics"] for r in rows):
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

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def spread(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def aggregate(rows: list[dict], metric: str) -> list[Group]:
    """One group per variant in the order first seen; the latest row wins when a (variant, seed) repeats."""
    latest: dict[tuple[str, int], dict] = {}
    for r in rows:
        latest[(r["variant"], r["seed"])] = r
    groups: dict[str, Group] = {}
    for (variant, _), r in latest.items():
        g = groups.setdefault(variant, Group(variant, r["kind"], r["plan"], r["budget"], [], r.get("group", "")))
        g.values.append(float(r["metrics"][metric]))
    return list(groups.values())


def mark_pareto(groups: list[Group], metric: str, x_axis: str) -> None:
    """A variant is on the frontier if no other of its group is at least as cheap and at least as good, and better in one.

    Groups are tasks: a plan that is cheap on an easy task does not dominate one on a hard task.
    """
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
    for g in groups:
        gx, gy = g.budget[x_axis], sign * g.mean
        g.pareto = not any(
            (h.budget[x_axis] <= gx and sign * h.mean <= gy) and (h.budget[x_axis] < gx or sign * h.mean < gy)
            for h in groups
            if h is not g and h.group == g.group
        )


def _whole(x: float) -> float | int:
    """A count of tokens stored as a float (it may be infinite) shown as the whole number it is."""
    return int(x) if math.isfinite(x) and x == int(x) else x


def report_table(groups: list[Group], metric: str, x_axis: str, markdown: bool = False) -> str:
    grouped = len({g.group for g in groups}) > 1
    rows = []
    for g in groups:
        value = f"{g.mean:.4f}" + (f" ± {g.spread:.4f}" if len(g.values) > 1 else "")
        rows.append(
            ([g.group] if grouped else [])
            + [
                g.variant,
                g.kind,
                g.plan["memory"],
                g.plan["range"],
                g.plan["attn"],
                g.budget["cached_positions"],
                g.budget["memory_bytes"] / 2**20,
                _whole(g.budget["receptive_field"]),
                value,
                len(g.values),
                "*" if g.pareto else "",
            ]
        )
    headers = ["variant", "kind", "memory", "range", "attn", "cached", "MiB/seq", "receptive field", metric, "seeds", "pareto"]
    return format_table((["group"] if grouped else []) + headers, rows, markdown)


def report_plot(groups: list[Group], metric: str, x_axis: str, title: str, paths: list[Path]) -> None:
    """Quality against budget, one point per variant with its seed spread; the Pareto frontier drawn through."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = [g.budget[x_axis] for g in groups]
    names = list(dict.fromkeys(g.group for g in groups))
    # one group: off-frontier blue, frontier red; several: a colour per group, frontier points filled
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)} if len(names) > 1 else None
    for n, (g, x) in enumerate(zip(groups, xs)):
        colour = colours[g.group] if colours else ("tab:red" if g.pareto else "tab:blue")
        ax.errorbar(
            x, g.mean, yerr=g.spread if len(g.values) > 1 else None, fmt="o" if g.kind == "train" else "s",
            color=colour, markerfacecolor=colour if (g.pareto or not colours) else "white", capsize=3, markersize=6,
        )
        ax.annotate(g.variant, (x, g.mean), textcoords="offset points", xytext=(5, 6 if n % 2 else -11), fontsize=7)
    for name in names:
        front = sorted((x, g.mean) for g, x in zip(groups, xs) if g.pareto and g.group == name)
        if len(front) > 1:
            ax.plot(*zip(*front), color=colours[name] if colours else "tab:red", linewidth=1, alpha=0.6)
    positive = [x for x in xs if x > 0 and math.isfinite(x)]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("symlog", linthresh=min(positive))  # zero stays at zero, the rest spreads logarithmically
    handles = [
        Line2D([], [], marker="o", linestyle="", color="gray", label="trained with this plan"),
        Line2D([], [], marker="s", linestyle="", color="gray", label="plan applied at evaluation"),
    ]
    if colours:
        handles += [Line2D([], [], color=c, marker="o", label=f"{name}: Pareto frontier") for name, c in colours.items()]
    else:
        handles.append(Line2D([], [], color="tab:red", label="Pareto frontier"))
    ax.legend(handles=handles, fontsize=7)
    ax.set_xlabel(X_AXES.get(x_axis, x_axis))
    ax.set_ylabel(metric + (" (higher is better)" if metric in HIGHER_IS_BETTER else " (lower is better)"))
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120)
    plt.close(fig)


def write_hparams(rows: list[dict], metric: str, folder: Path) -> None:
    """Every result in TensorBoard's HPARAMS view (rewritten from the table each time)."""
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(folder, ignore_errors=True)
    for r in rows:
        writer = SummaryWriter(str(folder / f"{r['variant']}-seed{r['seed']}"))
        hp = {"variant": r["variant"], "group": r.get("group", ""), "kind": r["kind"], "memory": r["plan"]["memory"], "range": r["plan"]["range"],
              "attn": r["plan"]["attn"], "seed": r["seed"]}
        m = {f"hparam/{metric}": float(r["metrics"][metric]), "hparam/cached_positions": float(r["budget"]["cached_positions"]),
             "hparam/memory_mib": r["budget"]["memory_bytes"] / 2**20}
        writer.add_hparams(hp, m, run_name=".")
        writer.close()


def build_report(rows: list[dict], title: str, out_dir: Path, x_axis: str = "cached_positions", plot: bool = True) -> dict:
    """Table (terminal and Markdown), plot (PNG and SVG) and hparams, from result rows alone."""
    metric = headline_metric(rows)
    order = {name: i for i, name in enumerate(dict.fromkeys(r.get("group", "") for r in rows))}  # groups as first seen
    groups = sorted(aggregate(rows, metric), key=lambda g: (order[g.group], g.budget[x_axis], g.variant))
    mark_pareto(groups, metric, x_axis)
    text = report_table(groups, metric, x_axis)
    markdown = report_table(groups, metric, x_axis, markdown=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out_dir / "report.md"}
    atomic_write_text(files["markdown"], f"# {title}\n\n{markdown}\n\n`*` marks the Pareto frontier of {metric} against {X_AXES.get(x_axis, x_axis)}.\n")
    if plot:
        files["png"], files["svg"] = out_dir / "report.png", out_dir / "report.svg"
        report_plot(groups, metric, x_axis, title, [files["png"], files["svg"]])
        files["tensorboard"] = out_dir / "tb-hparams"
        write_hparams(rows, metric, files["tensorboard"])
    return {"metric": metric, "groups": groups, "table": text, "markdown": markdown, "files": files}
