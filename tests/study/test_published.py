"""The result rows behind the published tables (benchmarks/results/NAME/SCALE/results.jsonl): every line reads
back, and `txl report` on them alone gives each table in benchmarks/README.md as it stands (benchmarks/publish.py),
so a fresh clone regenerates what is published."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from txl.study.results import read_results

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"
_spec = importlib.util.spec_from_file_location("txl_publish", ROOT / "publish.py")
publish = sys.modules.setdefault("txl_publish", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(publish)
README = (ROOT / "README.md").read_text()
TABLES = publish.tables(README)


def test_published_tables_and_their_rows_are_there():
    assert ("memory/frontier", "medium") in [(t.name, t.scale) for _, t in TABLES]
    for _, table in TABLES:
        rows = read_results(table.rows)
        assert rows and len(rows) == sum(1 for line in table.rows.read_text().splitlines() if line.strip())


@pytest.mark.parametrize("found", TABLES, ids=lambda f: f"{f[1].name}/{f[1].scale}")
def test_txl_report_on_the_committed_rows_gives_the_published_table(found):
    block, table = found
    body, n = publish.regenerate(table)
    fresh = publish.marker(table, n) + body + "<!-- end txl report -->"
    assert fresh == block[0], "benchmarks/README.md is not what its rows give: python benchmarks/publish.py"
    assert all(r.variant in body for r in read_results(table.rows))


def test_publishing_copies_whole_rows_only_and_says_which_it_left(tmp_path, monkeypatch, caplog):
    rows = [line for line in next(t for _, t in TABLES).rows.read_text().splitlines() if line.strip()][:3]
    monkeypatch.setattr(publish, "ROWS", tmp_path / "published")
    table = publish.Table(["--scale", "medium"], "memory/frontier", "medium")
    source = tmp_path / "results" / "memory" / "frontier" / "medium"
    source.mkdir(parents=True)
    damaged = rows[1][:-2]  # a line cut short between whole ones
    torn = rows[0][:40]  # a last line a crash left half-written
    (source / "results.jsonl").write_text("\n".join([rows[0], damaged, rows[1], rows[2], torn]) + "\n")
    assert publish.copy_rows(table, tmp_path / "results") == 3
    assert table.rows.read_text() == "\n".join(rows) + "\n"  # byte for byte as they were appended
    assert "line 2 is not JSON" in caplog.text and "line 5" not in caplog.text
    with pytest.raises(SystemExit, match="no rows at"):
        publish.copy_rows(table, tmp_path / "nothing")
