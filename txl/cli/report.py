"""txl report: a named experiment's results, as a table and a plot of quality against memory budget."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from txl.cli.args import command, load_definitions, say
from txl.core.errors import TxlError
from txl.core.scales import SCALES


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "name",
        nargs="+",
        help="an experiment name; several are reported one after another, their pairs (--pairs) adjusted together",
    )
    p.add_argument("--scale", choices=SCALES, default="small")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--corpus", help="the results of a run with --corpus (as given to txl run)")
    p.add_argument("--tokenizer", help="the results of a run with --tokenizer (as given to txl run)")
    p.add_argument("--vocab-size", type=int, help="the results of a run with --vocab-size (as given to txl run)")
    p.add_argument(
        "--x-axis",
        choices=[
            "cached_positions",
            "long_range_positions",
            "memory_bytes",
            "bytes",
            "attn_flops_per_token",
            "receptive_field",
        ],
        help="what quality is plotted against (bytes: memory_bytes; default: the experiment's choice)",
    )
    p.add_argument("--markdown", action="store_true", help="print the Markdown table (as --format markdown)")
    p.add_argument(
        "--format",
        choices=["text", "markdown", "csv", "latex"],
        default="text",
        help="what to print; report.md, report.csv and report.tex are written beside the results either way",
    )
    p.add_argument(
        "--split",
        choices=["valid", "test"],
        help="which split's scores to show (default valid, where variants are chosen; test after 'txl run --test')",
    )
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--pairs",
        action="store_true",
        help="also compare every pair of variants (paired differences, Holm-adjusted p-values): pairs.md, pairs.csv",
    )


def show_report(
    exp,
    rows: list,
    root: Path,
    split: str | None,
    x_axis: str | None = None,
    plot: bool = True,
    fmt: str = "text",
) -> dict:
    """Build, print and return the report of one split's rows (report.* for valid, report-test.* for test)."""
    return _show(exp, _assemble(exp, rows, root, split, x_axis), root, plot, fmt)


def _assemble(exp, rows: list, root: Path, split: str | None, x_axis: str | None = None) -> dict:
    """One split's report assembled (txl.study.report.assemble), nothing written yet."""
    from txl.study.registry import results_path
    from txl.study.report import assemble, rows_of_split

    split, chosen = rows_of_split(rows, split)
    where = f" --results {root}" if str(root) != "results" else ""
    if not chosen:
        raise TxlError(
            f"no {split} results at {results_path(root, exp)}; run 'txl run {exp.name} --scale {exp.scale}{where}"
            + (" --test'" if split == "test" else "'")
        )
    report = assemble(chosen, x_axis or exp.x_axis, exp.baseline, [v.group for v in exp.variants])
    return {**report, "split": split, "title": exp.title(chosen)}


def _show(exp, report: dict, root: Path, plot: bool, fmt: str, tested: int | None = None) -> dict:
    """Write and print an assembled report; `tested`: the pairs its Holm adjustment ran over, if pooled."""
    from txl.study.registry import results_path
    from txl.study.report import superseded, write_report

    split, title = report["split"], report["title"]
    stem = "report" if split == "valid" else f"report-{split}"
    report = write_report(report, title, results_path(root, exp).parent, plot, stem, tested)
    older = superseded(report["rows"])
    if older:
        print(
            f"note: {len(older)} results were measured under more than one configuration; the latest is shown "
            f"({', '.join(older[:3])}{' ...' if len(older) > 3 else ''})",
            file=sys.stderr,
        )
    if fmt in ("text", "markdown"):
        print(f"\n{'# ' if fmt == 'markdown' else ''}{title}\n")
    print(report[{"text": "table"}.get(fmt, fmt)])
    if fmt in ("text", "markdown"):
        print(
            report["legend"]
            + ("\ntest split: report these numbers; choose plans and variants on valid" if split == "test" else "")
        )
    return report


def _where_else(root: Path, exp, args: argparse.Namespace, name: str) -> str:
    """What to do about missing results: the flags that show the results this experiment has on other data, or
    the command that makes them."""
    from txl.study.registry import other_results

    found = other_results(root, exp)
    if not found:
        from txl.cli.cluster import sweep

        return f"run '{sweep(argparse.Namespace(**{**vars(args), 'name': name}), [], None).command()}' first"
    shown = ", ".join(f"'txl report {name} --scale {args.scale} {flags}'" for flags in found[:3])
    return f"this experiment has results on other data: {shown}"


@command("report", "quality against memory budget from a results table: table, plot, Pareto frontier", _report_args)
def cmd_report(args: argparse.Namespace) -> int:
    from txl.study.pairs import adjust, pairs_legend, pairs_table, write_pairs

    load_definitions()
    found = [(name, *_one_report(args, name)) for name in args.name]
    pool = [p for *_, report in found for p in report["pairs"]]
    adjust(pool)  # Holm's correction over every pair of the experiments reported together
    tested = sum(p.p_holm is not None for p in pool)
    together = f" of {len(found)} experiments" if len(found) > 1 else ""
    table_fmt = "markdown" if args.markdown else args.format
    shown = []
    for name, path, exp, report in found:
        report = _show(exp, report, Path(args.results), not args.no_plot, table_fmt, tested)
        if args.pairs:
            pairs, legend = report["pairs"], pairs_legend(report["pairs"], tested, together)
            if table_fmt in ("text", "markdown"):  # csv and latex print the report's table alone; pairs are in files
                head = f"{name}: pairs\n" if len(found) > 1 else ""
                print(f"\n{head}{pairs_table(pairs, report['metric'], table_fmt)}\n{legend}")
            stem = "pairs" if report["split"] in (None, "valid") else f"pairs-{report['split']}"
            report["files"].update(write_pairs(pairs, report["metric"], path.parent, stem, legend))
        shown.append(report)
    for report in shown:
        for kind, file in report["files"].items():
            say(args, f"{kind:<12} {file}")
    return 0


def _one_report(args: argparse.Namespace, name: str) -> tuple[Path, object, dict]:
    """One experiment's results file, the experiment, and its report assembled (not yet printed)."""
    from txl.study.registry import get_experiment, results_path, retarget
    from txl.study.results import read_results

    exp = retarget(get_experiment(name, args.scale), args.corpus, args.tokenizer, args.vocab_size)
    path = results_path(Path(args.results), exp)
    rows = [r for r in read_results(path) if r.scale == args.scale]
    if not rows and path.exists() and path.stat().st_size > 0:
        raise TxlError(f"{path} has no readable {args.scale} rows (the damaged lines are named above)")
    if not rows:
        raise TxlError(f"no results at {path}; " + _where_else(Path(args.results), exp, args, name))
    x_axis = {"bytes": "memory_bytes"}.get(args.x_axis, args.x_axis)
    return path, exp, _assemble(exp, rows, Path(args.results), args.split, x_axis)
