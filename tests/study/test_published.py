"""The result rows behind the published tables (benchmarks/results/NAME/SCALE/results.jsonl): every line reads
back, and `txl report` regenerates the table and its pairs from them alone on a fresh clone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from txl.cli import main
from txl.study.results import read_results

ROOT = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
PUBLISHED = sorted(ROOT.glob("**/results.jsonl"))


def _name_and_scale(path: Path) -> tuple[str, str]:
    parts = path.relative_to(ROOT).parts
    return "/".join(parts[:-2]), parts[-2]


def test_published_rows_are_there():
    assert ("memory/frontier", "medium") in [_name_and_scale(p) for p in PUBLISHED]


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: "/".join(_name_and_scale(p)))
def test_txl_report_regenerates_a_published_table_from_its_rows(path, tmp_path, capsys):
    rows = read_results(path)
    assert rows and len(rows) == sum(1 for line in path.read_text().splitlines() if line.strip())  # none damaged
    name, scale = _name_and_scale(path)
    copy = tmp_path / name / scale
    copy.mkdir(parents=True)
    shutil.copy(path, copy / "results.jsonl")  # the report writes beside the rows: not into the checkout
    argv = ["report", name, "--scale", scale, "--results", str(tmp_path), "--no-plot", "--pairs", "--markdown"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert all(r.variant in out for r in rows)  # every row's variant is in the table
    assert (copy / "pairs.md").is_file() and (copy / "report.md").is_file()
