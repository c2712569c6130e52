"""Every command's output on the same inputs, normalised, for comparing two commits of txl.

A restructuring promises that no command prints anything different. This script runs a fixed
list of commands (a tiny model trained here, then evaluated, analysed, searched, exported,
swept and reported, plus bad input) with the `txl` found first on PATH, and writes each
command's exit code, stdout and stderr to a folder, with times, dates and the scratch folder's
path replaced by placeholders. Run it at two commits and compare the folders:

    python benchmarks/command_outputs.py --out /tmp/before      # at the old commit
    python benchmarks/command_outputs.py --out /tmp/after       # at the new one
    python benchmarks/command_outputs.py --compare /tmp/before /tmp/after

Progress bars (stderr) are dropped; everything a user reads on stdout is kept.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = 30  # a tiny model's training: enough for every command to have something to read

COMMANDS = [
    ("help", "txl --help"),
    ("list", "txl list"),
    ("data-list", "txl data list"),
    ("budget", "txl budget --layers 24 --d-model 1024 --memory 24x2304 --memory lrm=4@interleave:2304,srm=128"),
    ("budget-range", "txl budget --layers 6 --d-model 64 --memory 6x32 --range range=8@first:3 --tgt-len 16"),
    ("train", f"txl train --preset tiny --run-dir {{w}}/run --set train.steps={STEPS} --no-progress"),
    ("train-resume", "txl train --run-dir {w}/run --resume --no-progress"),
    ("eval", "txl eval {w}/run --memory 0 --memory 8 --memory 16 --no-progress"),
    ("eval-range", "txl eval {w}/run --memory 16 --range 4 --same-length --clamp-len 8 --no-progress"),
    ("eval-csv", "txl eval {w}/run --memory 0 --memory 16 --format csv --no-progress"),
    ("eval-latex", "txl eval {w}/run --format latex --tgt-len 8 --batch-size 2 --no-progress"),
    ("eval-markdown", "txl eval {w}/run --format markdown --split test --max-segments 4 --no-progress"),
    ("eval-protocol", "txl eval {w}/run --protocol wt103-base --tgt-len 16 --memory 16 --max-segments 3 --no-progress"),
    ("eval-corpus", "txl eval {w}/run --corpus {w}/other.txt --no-progress"),
    ("eval-bad-tgt", "txl eval {w}/run --tgt-len 0"),
    ("eval-bad-memory", "txl eval {w}/run --memory lrm=9@first:3"),
    ("eval-bad-protocol", "txl eval {w}/run --protocol nope"),
    ("compare", "txl compare {w}/run"),
    ("generate", "txl generate {w}/run --prompt 'def ' --tokens 20 --seed 1"),
    ("sensitivity", "txl analyze sensitivity {w}/run --max-segments 4 --no-progress"),
    ("sensitivity-csv", "txl analyze sensitivity {w}/run --max-segments 4 --short 2 --format csv --no-progress"),
    ("attention", "txl analyze attention {w}/run --max-segments 3"),
    ("context", "txl analyze context {w}/run --lengths 4,16 --windows 8 --score 4 --out {w}/ctx"),
    ("plan", "txl plan {w}/run --budget 40 --max-segments 4 --confirm 2 --refine 2 --no-progress"),
    (
        "plan-of",
        "txl plan {w}/run --budget-of 1x16,1x0 --max-segments 4 --confirm 2 --refine 1 --format csv --no-progress",
    ),
    ("plan-bad", "txl plan {w}/run --budget -1"),
    ("export", "txl export {w}/run --to original --out {w}/orig"),
    ("export-tf", "txl export {w}/run --to transformers --out {w}/hf"),
    ("sweep", "txl run quickstart --scale tiny --results {w}/results --no-progress"),
    ("sweep-again", "txl run quickstart --scale tiny --results {w}/results --no-progress"),
    ("report", "txl report quickstart --scale tiny --results {w}/results"),
    ("report-csv", "txl report quickstart --scale tiny --results {w}/results --format csv"),
    ("report-bad", "txl report nope/nothing --results {w}/results"),
]

_NORMALISE = [
    (re.compile(r"\d{8}-\d{6}(-[0-9a-f]+)?"), "TIME"),
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?"), "TIME"),
    (re.compile(r"\b\d+(\.\d+)? ?s\b"), "N s"),  # elapsed seconds
    (re.compile(r"\b\d+(\.\d+)? (ms|min)\b"), "N \\2"),
    (re.compile(r"[\d,]+ tokens/s"), "N tokens/s"),
    (re.compile(r"TIME-\d+"), "TIME"),  # a saved evaluation's file name: its time, then the process id
    (re.compile(r"[ \t]+$", re.M), ""),  # a cleared progress line is as wide as the terminal it ran in
]


def normalise(text: str, scratch: str) -> str:
    text = text.replace(scratch, "{w}") if scratch else text
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    # progress bars (tqdm redraws with carriage returns) are not output anyone compares
    return "\n".join(
        line for line in text.splitlines() if "\r" not in line and "it/s]" not in line and "seg/s]" not in line
    )


def capture(out: Path, only: list[str] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="txl-outputs-")
    try:
        Path(scratch, "other.txt").write_text("def f(x):\n    return x + 1\n" * 400, encoding="utf-8")
        env = {**os.environ, "TXL_DATA": os.environ.get("TXL_DATA", str(Path(scratch) / "data")), "COLUMNS": "120"}
        for name, template in COMMANDS:
            if only and name not in only:
                continue
            command = template.format(w=scratch)
            done = subprocess.run(command, shell=True, capture_output=True, text=True, env=env, cwd=scratch)
            body = f"$ {template}\nexit {done.returncode}\n--- stdout\n{normalise(done.stdout, scratch)}\n"
            body += f"--- stderr\n{normalise(done.stderr, scratch)}\n"
            (out / f"{name}.txt").write_text(body, encoding="utf-8")
            print(f"{name:<18} exit {done.returncode}", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compare(a: Path, b: Path) -> int:
    differ = 0
    for name, _ in COMMANDS:
        left, right = a / f"{name}.txt", b / f"{name}.txt"
        if not (left.exists() and right.exists()):
            print(f"{name:<18} missing on one side")
            differ += 1
            continue
        left_text, right_text = normalise(left.read_text(), ""), normalise(right.read_text(), "")
        if left_text == right_text:
            print(f"{name:<18} same")
            continue
        differ += 1
        print(f"{name:<18} DIFFERS")
        lines = difflib.unified_diff(
            left_text.splitlines(), right_text.splitlines(), str(left), str(right), lineterm=""
        )
        print("\n".join(lines))
    print(f"{len(COMMANDS) - differ} of {len(COMMANDS)} commands print the same")
    return 1 if differ else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="folder to write the outputs into")
    p.add_argument("--only", nargs="*", help="capture only these commands (by name)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="compare two captured folders")
    args = p.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not args.out:
        p.error("give --out or --compare")
    capture(args.out, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
