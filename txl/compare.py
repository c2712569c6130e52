"""Several runs side by side: their saved evaluations (`txl eval` keeps them in RUN/evals.jsonl)
in one table and one plot."""

from __future__ import annotations

from pathlib import Path

from txl.errors import TxlError
from txl.io import atomic_write_text, pyplot, read_jsonl, save_figure
from txl.table import render_table


def latest_evaluations(run: Path) -> list[dict]:
    """A run's saved evaluations, the latest per (plan, split, corpus)."""
    rows = read_jsonl(run / "evals.jsonl", on_bad=lambda n, why: None)
    if not rows:
        raise TxlError(f"{run} has no saved evaluations; run 'txl eval {run}' first")
    latest: dict[tuple, dict] = {}
    for r in rows:
        latest[(r.get("plan"), r.get("split"), r.get("corpus"))] = r
    return sorted(
        latest.values(), key=lambda r: (r.get("split", ""), r.get("corpus", ""), r.get("cached_positions", 0))
    )


def compare_rows(runs: list[Path]) -> tuple[list[str], list[list], str]:
    """One row per run and plan, and the metric they share."""
    by_run = {run: latest_evaluations(run) for run in runs}
    metrics = {r.get("metric") for rows in by_run.values() for r in rows}
    if len(metrics) != 1:
        raise TxlError(
            f"the runs report different metrics ({', '.join(sorted(map(str, metrics)))}); "
            "compare runs on one kind of data"
        )
    metric = metrics.pop()
    headers = ["run", "memory plan", "corpus", "split", "cached", "receptive field", metric, "loss (nats)", "tokens"]
    rows = [
        [
            str(run),
            r["plan"],
            r.get("corpus"),
            r.get("split"),
            r.get("cached_positions"),
            r.get("receptive_field"),
            r.get(metric, r["loss"]),
            r["loss"],
            r.get("tokens"),
        ]
        for run, rs in by_run.items()
        for r in rs
    ]
    return headers, rows, metric


def compare(runs: list[Path], out_dir: Path, fmt: str = "text", plot: bool = True) -> dict:
    """The table (printed in `fmt`; Markdown and CSV written to out_dir)
    and a plot of quality against cached positions."""
    headers, rows, metric = compare_rows(runs)
    files = {"markdown": out_dir / "compare.md", "csv": out_dir / "compare.csv"}
    atomic_write_text(files["markdown"], render_table(headers, rows, "markdown") + "\n")
    atomic_write_text(files["csv"], render_table(headers, rows, "csv") + "\n")
    if plot:
        files["png"] = out_dir / "compare.png"
        _plot(rows, metric, files["png"])
    return {"table": render_table(headers, rows, fmt), "files": files}


def _plot(rows: list[list], metric: str, path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for n, run in enumerate(dict.fromkeys(r[0] for r in rows)):
        points = sorted((r[4], r[6]) for r in rows if r[0] == run and r[4] is not None)
        ax.plot(*zip(*points), marker="o", color=f"C{n % 10}", label=run)
    ax.set_xlabel("cached positions per sequence")
    ax.set_ylabel(f"{metric} (lower is better)" if metric != "accuracy" else "accuracy (higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
