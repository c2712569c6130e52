"""Kill trials: interrupt training and sweeps at random moments, resume, and compare with an uninterrupted run.

    python benchmarks/kill_trials.py --trials 30                 # 30 SIGKILL and 30 SIGINT trials of training
    python benchmarks/kill_trials.py --trials 10 --target sweep  # the same for a tiny experiment sweep
    python benchmarks/kill_trials.py --trials 10 --target local --signals INT  # Ctrl-C to a local-launcher sweep

Training trials use a step whose optimizer update is heavy (a wide feed-forward layer),
so a signal often lands inside it. Each trial starts the command, sends the signal after
a random delay, then resumes (`--resume`, or the same `txl run` again) until it
finishes, and checks: the run resumed and finished; its final weights and its loss log
equal the uninterrupted run's bit for bit (for sweeps: every result row's metrics);
every results line is whole and no (variant, seed) appears twice; no temporary folder
is left. The local target runs the sweep with `--launcher local --parallel 2` and sends the
signal to its whole process group, as a terminal's Ctrl-C does (its jobs and their controllers
too). Every target also checks that what txl printed holds no traceback and at most one
'interrupted' line, and that a SIGINT ends it with status 130 (or 0, when it came too late).
Prints one row per trial and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

TRAIN = [
    "--preset",
    "tiny",
    "--steps",
    "40",
    "--no-progress",
    "--set",
    "train.log_every=1",
    "--set",
    "train.save_every=5",
    "--set",
    "model.d_inner=4096",
    "--set",
    "model.dropout=0.1",
    "--set",
    "train.optimizer=adamw",
    "--set",
    "train.batch_size=2",
    "--set",
    "train.tgt_len=8",
]


def _default_signals() -> None:
    # a shell starts background jobs with SIGINT ignored, and a child inherits that:
    # give txl the default, as a terminal would
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def txl(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "txl", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_signals,
        start_new_session=True,  # a process group of its own: the local target signals all of it, as a terminal
    )


def sweep_args(results: Path, data: str, target: str) -> list[str]:
    args = ["run", "quickstart", "--scale", "tiny", "--results", str(results), "--no-progress", "--set", data]
    return args + (["--launcher", "local", "--parallel", "2"] if target == "local" else [])


def finish(args: list[str], cwd: Path, tries: int = 5) -> int:
    """Run `args` to the end (it resumes); returns how many attempts it took."""
    for attempt in range(1, tries + 1):
        proc = txl(*args, cwd=cwd)
        _, err = proc.communicate()
        if proc.returncode == 0:
            return attempt
    raise RuntimeError(f"did not finish after {tries} attempts: {err.strip().splitlines()[-1:]}")


def train_state(run: Path) -> tuple[dict, list]:
    weights = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    log = [
        (r["step"], r["loss"])
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "train"
    ]
    return weights, log


def sweep_state(results: Path) -> dict:
    path = results / "quickstart" / "tiny" / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]  # raises on a partial line
    keys = [(r["variant"], r["seed"]) for r in rows]
    if len(keys) != len(set(keys)):
        raise AssertionError(f"duplicate rows: {len(keys) - len(set(keys))}")
    return {(r["variant"], r["seed"]): r["metrics"] for r in rows}


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name or ".link-" in p.name]


def trial(target: str, sig: signal.Signals, delay: float, work: Path, reference) -> tuple[bool, str]:
    data = f"data.root={work.parent / 'data'}"
    if target == "train":
        args = ["train", *TRAIN, "--set", data, "--run-dir", str(work / "run")]
        resume = ["train", "--run-dir", str(work / "run"), "--resume", "--no-progress"]
    else:
        args = resume = sweep_args(work / "results", data, target)
    proc = txl(*args, cwd=work)
    time.sleep(delay)
    if target == "local":
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate()
    said = "Traceback" not in err and err.count("interrupted") <= 1
    said = said and (sig != signal.SIGINT or proc.returncode in (0, 130))  # a Ctrl-C: 130 (or done), never -2
    if proc.returncode == 0:
        attempts = 0  # it finished before the signal came
    elif target == "train" and not (work / "run" / "checkpoints" / "last").exists():
        attempts = finish(args, work)  # killed before its first checkpoint: it starts again
    else:
        attempts = finish(resume, work)
    left = leftovers(work) + leftovers(work.parent / "data")  # the shared token cache too
    if target == "train":
        weights, log = train_state(work / "run")
        ref_w, ref_log = reference
        same = (
            log == ref_log and weights.keys() == ref_w.keys() and all((weights[k] == ref_w[k]).all() for k in weights)
        )
    else:
        same = sweep_state(work / "results") == reference
    ok = same and not left and said
    what = (
        f"exit {proc.returncode}, {attempts} resume run(s), {'equal' if same else 'DIFFERENT'}, {len(left)} leftovers"
    )
    if not said:
        last = (err.strip().splitlines() or [""])[-1][:80]
        what += f", a TRACEBACK, more than one line on the terminal or another status than 130: {last}"
    if left:
        what += ": " + ", ".join(str(p.relative_to(work.parent)) for p in left[:3])
    return ok, what


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=30, help="trials per signal (default 30)")
    p.add_argument("--target", choices=["train", "sweep", "local"], default="train")
    p.add_argument("--signals", default="KILL,INT")
    p.add_argument(
        "--max-delay",
        type=float,
        default=None,
        help="latest signal, seconds after start (default: 90%% of a clean run)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="txl-kill-") as tmp:
        root = Path(tmp)
        clean = root / "clean"
        clean.mkdir()
        start = time.time()
        if args.target == "train":
            finish(["train", *TRAIN, "--set", f"data.root={root / 'data'}", "--run-dir", str(clean / "run")], clean)
            reference = train_state(clean / "run")
        else:
            finish(sweep_args(clean / "results", f"data.root={root / 'data'}", args.target), clean)
            reference = sweep_state(clean / "results")
        seconds = time.time() - start
        max_delay = args.max_delay or 0.9 * seconds
        print(f"uninterrupted {args.target}: {seconds:.1f} s; signals between 0.3 s and {max_delay:.1f} s after start")
        summary, stopped = {}, {}
        for name in args.signals.split(","):
            sig = getattr(signal, f"SIG{name}")
            passed = 0
            for n in range(args.trials):
                work = root / f"{name}-{n}"
                work.mkdir()
                delay = rng.uniform(0.3, max_delay)
                ok, what = trial(args.target, sig, delay, work, reference)
                passed += ok
                stopped[name] = stopped.get(name, 0) + ("exit 0," not in what)
                print(f"SIG{name:<4} trial {n + 1:>2}: signal at {delay:5.2f} s: {what}", flush=True)
            summary[name] = passed
        print()
        for name, passed in summary.items():
            print(
                f"SIG{name}: {passed} of {args.trials} trials resumed to the uninterrupted result bit for bit, "
                f"nothing left over ({stopped[name]} stopped by the signal, the rest finished first)"
            )
    return 0 if all(v == args.trials for v in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
