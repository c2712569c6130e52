"""Regenerate the published tables in benchmarks/README.md from their committed rows, with `txl report`.

    python benchmarks/publish.py --from results   # copy each table's rows from a results folder, then regenerate
    python benchmarks/publish.py                  # regenerate every table from benchmarks/results/ alone
    python benchmarks/publish.py --check          # exit 1 naming each table that its rows no longer give

A published table sits between two markers that name the report behind it:

    <!-- txl report memory/frontier --scale medium --x bytes --pairs: 14 rows -->
    ...the table (report.md without its title), and with --pairs the pairs (pairs.md)...
    <!-- end txl report -->

Its rows are benchmarks/results/NAME/SCALE/results.jsonl (no run folders): a fresh clone gives the same table
(tests/study/test_published.py checks that it does). Copying takes only whole rows (a line a crash left
half-written is dropped, a damaged one named) and replaces the committed file in one step.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "benchmarks" / "README.md"
ROWS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(
    r"<!-- txl report (?P<args>[^:>]+?): (?P<n>\d+) rows -->\n(?P<body>.*?)<!-- end txl report -->", re.S
)


@dataclass
class Table:
    args: list[str]  # txl report's arguments after the experiment's name was taken out
    name: str
    scale: str

    @property
    def rows(self) -> Path:
        return ROWS / self.name / self.scale / "results.jsonl"

    @property
    def pairs(self) -> bool:
        return "--pairs" in self.args


def tables(text: str) -> list[tuple[re.Match, Table]]:
    found = []
    for m in BLOCK.finditer(text):
        args = shlex.split(m["args"])
        name, rest = args[0], args[1:]
        scale = rest[rest.index("--scale") + 1] if "--scale" in rest else "small"
        found.append((m, Table(rest, name, scale)))
    return found


def copy_rows(table: Table, folder: Path) -> int:
    """Write the whole rows of a results folder's file over the committed one, in one step; the rows are read as
    every reader of results reads them (txl.study.results.read_results: a torn last line dropped, a damaged line
    named in a warning and left out) and written as they were appended."""
    from txl.core.io import atomic_write_text
    from txl.study.results import read_results

    source = folder / table.name / table.scale / "results.jsonl"
    if not source.is_file():
        raise SystemExit(f"publish: no rows at {source}; run 'txl run {table.name} --scale {table.scale}' first")
    rows = read_results(source)
    table.rows.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(table.rows, "".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    return len(rows)


def regenerate(table: Table) -> tuple[str, int]:
    """The block `txl report` gives from the committed rows alone, and their number."""
    from txl.cli import main
    from txl.study.results import read_results

    n = len(read_results(table.rows))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / table.name / table.scale
        copy.mkdir(parents=True)
        (copy / "results.jsonl").write_text(table.rows.read_text())
        argv = ["report", table.name, *table.args, "--results", tmp, "--no-plot"]
        with contextlib.redirect_stdout(io.StringIO()):
            if main(argv) != 0:
                raise SystemExit(f"publish: txl {shlex.join(argv)} failed")
        report = (copy / "report.md").read_text().split("\n", 2)[2].strip()  # without the title line
        body = f"\n{report}\n"
        if table.pairs:
            body += f"\nPairs (`pairs.md`):\n\n{(copy / 'pairs.md').read_text().strip()}\n"
    return body + "\n", n


def marker(table: Table, n: int) -> str:
    return f"<!-- txl report {shlex.join([table.name, *table.args])}: {n} rows -->\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="folder", type=Path, help="copy each table's rows from this results folder first")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its rows")
    args = p.parse_args(argv)
    text = README.read_text()
    found = tables(text)
    if not found:
        raise SystemExit(f"publish: {README} has no '<!-- txl report ...: N rows -->' block")
    out, stale, end = [], [], 0
    for m, table in found:
        if args.folder and not args.check:
            copy_rows(table, args.folder)
        body, n = regenerate(table)
        new = marker(table, n) + body + "<!-- end txl report -->"
        if new != m[0]:
            stale.append(f"{table.name} --scale {table.scale}")
        out += [text[end : m.start()], new]
        end = m.end()
        print(f"{table.name} --scale {table.scale}: {n} rows" + (" (changed)" if new != m[0] else ""))
    if args.check:
        if stale:
            print(f"publish: tables that their rows no longer give: {', '.join(stale)}", file=sys.stderr)
        return 1 if stale else 0
    if stale:
        from txl.core.io import atomic_write_text

        atomic_write_text(README, "".join(out) + text[end:])
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
