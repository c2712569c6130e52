"""txl run, txl report: named experiments, run side by side and reported against memory budget."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from txl.cli.args import add_overrides, command
from txl.errors import TxlError


def load_definitions() -> None:
    """Register every definition in `experiments/` (imported on use, so `txl --help` need not load torch)."""
    import experiments  # noqa: F401


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N, e.g. 0/4, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="an experiment name (txl list), e.g. quickstart or rae2020/lrm-count")
    p.add_argument("--scale", choices=["tiny", "small", "paper"], default="small", help="small runs on a CPU; paper is the published size")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N", help="run only shard I of N (a job array, several machines)")
    p.add_argument("--corpus", help="train on this corpus instead of the experiment's (its results go to a folder of their own)")
    p.add_argument("--tokenizer", help="read the corpus with this tokenizer (auto, bytes, chars, words, sentencepiece, or a file)")
    p.add_argument("--steps", type=int, help="training steps per run")
    p.add_argument("--seeds", type=int, metavar="N", help="train (and evaluate) every variant with seeds 0..N-1 (default: the experiment's)")
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--test", action="store_true",
                   help="then score every variant's trained model on the test split, once, for reporting (variants are chosen on valid)")
    add_overrides(p, help="override the base config of every variant")
    p.add_argument("--no-progress", action="store_true")


@command("run", "run every variant of a named experiment; finished ones are skipped, interrupted ones resumed", _run_args)
def cmd_run(args: argparse.Namespace) -> int:
    from txl.distributed import finish_distributed
    from txl.experiments import get_experiment, results_path, retarget, run_experiment

    load_definitions()
    exp = retarget(get_experiment(args.name, args.scale), args.corpus, args.tokenizer)
    if args.seeds is not None:
        if args.seeds < 1:
            raise TxlError(f"--seeds must be >= 1, got {args.seeds}")
        exp.seeds = list(range(args.seeds))
    overrides = list(args.overrides)
    for flag, key in (("steps", "train.steps"), ("device", "train.device")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    root = Path(args.results)
    start = time.time()
    ok = False
    try:
        rows = run_experiment(exp, root, args.shard, overrides, progress=not args.no_progress)
        if args.test:
            rows = run_experiment(exp, root, args.shard, progress=not args.no_progress, split="test")
        ok = True
    finally:
        finish_distributed(ok)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    mine = [r for r in rows if r["scale"] == exp.scale]
    plots = [_report(exp, mine, root, split)["files"].get("png") for split in (["valid", "test"] if args.test else [None])]
    print()
    print(f"finished in {time.time() - start:.0f} s; results {results_path(root, exp)}")
    print(f"plot         {', '.join(str(p) for p in plots)}")
    print(f"tensorboard  tensorboard --logdir {results_path(root, exp).parent}")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="an experiment name")
    p.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--corpus", help="the results of a run with --corpus (as given to txl run)")
    p.add_argument("--tokenizer", help="the results of a run with --tokenizer (as given to txl run)")
    p.add_argument("--x-axis", choices=["cached_positions", "long_range_positions", "memory_bytes", "attn_flops_per_token", "receptive_field"],
                   help="what quality is plotted against (default: the experiment's choice)")
    p.add_argument("--markdown", action="store_true", help="print the Markdown table (as --format markdown)")
    p.add_argument("--format", choices=["text", "markdown", "csv", "latex"], default="text",
                   help="what to print; report.md, report.csv and report.tex are written beside the results either way")
    p.add_argument("--split", choices=["valid", "test"],
                   help="which split's scores to show (default valid, where variants are chosen; test after 'txl run --test')")
    p.add_argument("--no-plot", action="store_true")


def _report(exp, rows: list[dict], root: Path, split: str | None, x_axis: str | None = None, plot: bool = True,
            fmt: str = "text") -> dict:
    """Build, print and return the report of one split's rows (report.* for valid, report-test.* for test)."""
    from txl.experiments import results_path
    from txl.report import build_report, rows_of_split, superseded

    split, chosen = rows_of_split(rows, split)
    where = f" --results {root}" if str(root) != "results" else ""
    if not chosen:
        raise TxlError(f"no {split} results at {results_path(root, exp)}; run 'txl run {exp.name} --scale {exp.scale}{where}"
                       + (" --test'" if split == "test" else "'"))
    report = build_report(chosen, exp.title(chosen), results_path(root, exp).parent, x_axis or exp.x_axis, plot=plot,
                          baseline=exp.baseline, stem="report" if split == "valid" else f"report-{split}")
    older = superseded(chosen)
    if older:
        print(f"note: {len(older)} results were measured under more than one configuration; the latest is shown "
              f"({', '.join(older[:3])}{' ...' if len(older) > 3 else ''})", file=sys.stderr)
    if fmt in ("text", "markdown"):
        print(f"\n{'# ' if fmt == 'markdown' else ''}{exp.title(chosen)}\n")
    print(report[{"text": "table"}.get(fmt, fmt)])
    if fmt in ("text", "markdown"):
        print(report["legend"] + ("\ntest split: report these numbers; choose plans and variants on valid" if split == "test" else ""))
    return report


@command("report", "quality against memory budget from a results table: table, plot, Pareto frontier", _report_args)
def cmd_report(args: argparse.Namespace) -> int:
    from txl.experiments import get_experiment, results_path, retarget
    from txl.results import read_results

    load_definitions()
    exp = retarget(get_experiment(args.name, args.scale), args.corpus, args.tokenizer)
    path = results_path(Path(args.results), exp)
    rows = [r for r in read_results(path, say=lambda s: print(f"warning: {s}", file=sys.stderr)) if r["scale"] == args.scale]
    if not rows:
        raise TxlError(f"no results at {path}; run 'txl run {args.name} --scale {args.scale}' first")
    report = _report(exp, rows, Path(args.results), args.split, args.x_axis, not args.no_plot,
                     "markdown" if args.markdown else args.format)
    for kind, file in report["files"].items():
        print(f"{kind:<12} {file}")
    return 0
