"""Several runs side by side: their saved evaluations (`txl eval` keeps them in RUN/evals.jsonl)
in one table and one plot."""

from __future__ import annotations

import logging
from pathlib import Path

from txl.core.errors import TxlError
from txl.core.io import atomic_write_text, pyplot, read_jsonl, save_figure, shown
from txl.core.table import render_table, whole

log = logging.getLogger(__name__)


def latest_evaluations(run: Path) -> list[dict]:
    """A run's saved evaluations, the latest per (plan, split, corpus)."""
    where = run / "evals.jsonl"
    saved = read_jsonl(where, on_bad=lambda n, why: log.warning(f"{where} line {n} {why}; left out"))
    rows = [r for n, r in enumerate(saved, 1) if _whole_row(run, n, r)]
    if not rows:
        raise TxlError(f"{run} has no saved evaluations; run 'txl eval {run}' first")
    latest: dict[tuple, dict] = {}
    for r in rows:
        latest[(r.get("plan"), r.get("split"), r.get("corpus"))] = r
    return sorted(
        latest.values(), key=lambda r: (r.get("split", ""), r.get("corpus", ""), r.get("cached_positions", 0))
    )


def _whole_row(run: Path, n: int, r: dict) -> bool:
    """A saved evaluation row of the right shape; another is named (file and line) and left out."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    ok = (
        isinstance(r, dict)
        and isinstance(r.get("plan"), str)
        and all(isinstance(r.get(k, ""), str) for k in ("split", "corpus"))
        and isinstance(r.get("metric"), (str, type(None)))
        and number(r.get("loss"))
        and all(number(r[k]) for k in ("cached_positions", "tokens", r.get("metric") or "loss") if r.get(k) is not None)
    )
    if not ok:
        log.warning(f"{run / 'evals.jsonl'}: evaluation {n} does not hold the right types; left out")
    return ok


X_AXES = {  # --x: the field of an evaluation, its column, its axis
    "cached": ("cached_positions", "cached", "cached positions per sequence"),
    "bytes": ("memory_mib", "MiB/seq", "memory per sequence (MiB)"),
}


def compare_rows(runs: list[Path], split: str | None = None, x: str = "cached") -> tuple[list[str], list[list], str]:
    """One row per run and plan (of one split, given one), and the metric they share: their own, or bits per byte
    where their tokenizers differ (every evaluation of text records it)."""
    by_run = {run: [r for r in latest_evaluations(run) if split is None or r.get("split") == split] for run in runs}
    empty = [str(run) for run, rows in by_run.items() if not rows]
    if empty:
        raise TxlError(
            f"{', '.join(empty)} has no saved evaluation of the {split} split; run 'txl eval RUN --split {split}'"
        )
    every = [r for rows in by_run.values() for r in rows]
    metrics = {r.get("metric") for r in every}
    if len(metrics) != 1 and all(isinstance(r.get("bpb"), (int, float)) for r in every):
        log.info(f"the runs report {', '.join(sorted(map(str, metrics)))}: compared in bits per byte, which all record")
        metrics = {"bpb"}
    if len(metrics) != 1:
        raise TxlError(
            f"the runs report different metrics ({', '.join(sorted(map(str, metrics)))}) and not all record bits "
            "per byte; compare runs on one kind of data"
        )
    metric = metrics.pop()
    key, x_header, _ = X_AXES[x]
    headers = ["run", "memory plan", "corpus", "split", "segment", x_header, "receptive field", metric, "loss (nats)"]
    rows = [
        [
            str(run),
            r["plan"],
            r.get("corpus"),
            r.get("split"),
            r.get("tgt_len"),
            r.get(key) if x == "bytes" else whole(r.get(key)),
            whole(r.get("receptive_field")),
            _fixed(r.get(metric, r["loss"])),
            _fixed(r["loss"]),
            whole(r.get("tokens")),
        ]
        for run, rs in by_run.items()
        for r in rs
    ]
    return [*headers, "tokens"], rows, metric


def _fixed(x):
    return round(float(x), 4) if isinstance(x, (int, float)) else x


def compare(
    runs: list[Path], out_dir: Path, fmt: str = "text", plot: bool = True, split: str | None = None, x: str = "cached"
) -> dict:
    """The table (printed in `fmt`; Markdown and CSV written to out_dir) and a plot of quality against memory
    (`x`: cached positions or bytes): a line per run, split, corpus and segment length (never joined), each point
    labelled with its plan."""
    headers, rows, metric = compare_rows(runs, split, x)
    files = {"markdown": out_dir / "compare.md", "csv": out_dir / "compare.csv"}
    atomic_write_text(files["markdown"], render_table(headers, rows, "markdown") + "\n")
    atomic_write_text(files["csv"], render_table(headers, rows, "csv") + "\n")
    if plot:
        files["png"] = out_dir / "compare.png"
        _plot(rows, metric, files["png"], X_AXES[x][2])
    return {"table": render_table(headers, rows, fmt), "files": files}


def plot_lines(rows: list[list]) -> list[tuple[str, str, list[tuple]]]:
    """(label, split, points) per run, corpus, split and segment length: evaluations of different text, or of
    different segments, are never one line. A point is (x, quality, plan)."""
    keys = list(dict.fromkeys((r[0], r[2], r[3], r[4]) for r in rows))
    several = len({k[1:] for k in keys}) > 1
    segments = len({k[3] for k in keys}) > 1
    out = []
    for run, corpus, split, segment in keys:
        mine = [r for r in rows if (r[0], r[2], r[3], r[4]) == (run, corpus, split, segment) and r[5] is not None]
        points = sorted((r[5], r[7], r[1]) for r in mine)
        if points:
            what = [split, corpus] + ([f"segments of {segment}"] if segments else [])
            out.append((f"{shown(run)} ({', '.join(what)})" if several else shown(run), split, points))
    return out


def _plot(rows: list[list], metric: str, path: Path, x_label: str = "cached positions per sequence") -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for n, (label, split, points) in enumerate(plot_lines(rows)):
        xs, ys, plans = zip(*points)
        ax.plot(xs, ys, marker="o", color=f"C{n % 10}", linestyle="-" if split == "valid" else "--", label=label)
        for px, py, plan in points:  # which plan each point is
            ax.annotate(plan, (px, py), textcoords="offset points", xytext=(3, 3), fontsize=6, color=f"C{n % 10}")
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"{metric} (lower is better)" if metric != "accuracy" else "accuracy (higher is better)")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
