"""txl compare: several runs' saved evaluations side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from txl.cli.args import command, say


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run folders evaluated with txl eval (their evals.jsonl)")
    p.add_argument("--out", default=".", help="folder for compare.md, compare.csv and compare.png (default: here)")
    p.add_argument(
        "--format", choices=["text", "markdown", "csv", "latex"], default="text", help="how to print the table"
    )
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--split", choices=["valid", "test", "whole"], help="only evaluations of this split (default: all)")
    p.add_argument(
        "--x", choices=["cached", "bytes"], default="cached", help="memory as cached positions (default) or bytes"
    )


@command(
    "compare",
    "several runs' saved evaluations side by side: one table, one plot of quality against memory",
    _compare_args,
)
def cmd_compare(args: argparse.Namespace) -> int:
    from txl.study.compare import compare

    result = compare([Path(r) for r in args.runs], Path(args.out), args.format, not args.no_plot, args.split, args.x)
    print(result["table"])
    for kind, file in result["files"].items():
        say(args, f"{kind:<9} {file}")
    return 0
