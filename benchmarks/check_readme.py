"""Check README.md's first-command table against what `txl run quickstart` reports.

    txl run quickstart                    # trains and evaluates (a few minutes on two cores)
    python benchmarks/check_readme.py     # compares each row's bpb and interval with the README's

Exit status 0 when every row of the README's table equals the fresh report's (the table in
results/quickstart/small/report.md), 1 naming the rows that differ.

What the rows depend on beside the code: torch's version and, on a CPU, its number of threads
(`OMP_NUM_THREADS`): they set the order in which a matrix product adds its terms, so the weights
differ in their last bits after a step and, over 2,000 steps of training, the bpb in the third
or fourth decimal. The README's table was made with MEASURED_THREADS threads; a run with another
count is named as the likely cause when rows differ (each run folder's versions.json records its
threads).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEASURED_THREADS = 2  # torch.get_num_threads() of the run behind the README's table (two cores)


def readme_rows(text: str) -> dict[str, list[str]]:
    """The README's first-command table: variant name -> its cells (the indented block after 'txl run quickstart')."""
    block = text[text.index("    variant ") :].split("\n\n", 1)[0].splitlines()
    return {re.split(r"\s{2,}", line.strip())[0]: re.split(r"\s{2,}", line.strip()) for line in block[2:]}


def report_rows(text: str) -> dict[str, list[str]]:
    """The Markdown report's table rows: variant name -> cells."""
    rows = [line for line in text.splitlines() if line.startswith("|") and not line.startswith("|-")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows[1:]]
    return {c[0]: c for c in cells}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results", help="where txl run wrote its results (default results/)")
    args = p.parse_args()
    report = Path(args.results) / "quickstart" / "small" / "report.md"
    if not report.is_file():
        print(f"no report at {report}; run 'txl run quickstart' first", file=sys.stderr)
        return 2
    ours, fresh = readme_rows((ROOT / "README.md").read_text()), report_rows(report.read_text())
    differ = []
    for variant, cells in ours.items():
        bpb = next(c for c in cells if "[" in c or re.fullmatch(r"\d+\.\d{4}", c))
        if variant not in fresh or not any(bpb in c for c in fresh[variant]):
            differ.append(f"{variant}: README {bpb}, fresh {fresh.get(variant)}")
    if differ or set(ours) != set(fresh):
        print("README differs from the fresh run:\n  " + "\n  ".join(differ or [f"variants {set(ours) ^ set(fresh)}"]))
        threads = _threads(Path(args.results))
        if threads and threads != {MEASURED_THREADS}:
            print(
                f"the fresh run trained with {', '.join(map(str, sorted(threads)))} CPU threads, the README's with "
                f"{MEASURED_THREADS}: the sums are added in another order, and 2,000 steps carry that into the bpb; "
                f"run it again with OMP_NUM_THREADS={MEASURED_THREADS}"
            )
        return 1
    print(f"README's first-command table matches {report} ({len(ours)} rows)")
    return 0


def _threads(results: Path) -> set[int]:
    """The CPU threads the fresh run's models trained with, from their run folders' versions.json."""
    found = set()
    for path in (results / "quickstart" / "small" / "runs").glob("*/*/versions.json"):
        try:
            found.add(int(json.loads(path.read_text())["threads"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return found


if __name__ == "__main__":
    sys.exit(main())
