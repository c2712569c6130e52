"""txl run: a named experiment's variants, run side by side (finished ones skipped, interrupted ones resumed)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from txl.cli.args import add_overrides, command, load_definitions
from txl.cli.cluster import add_launcher_args, resources, sweep
from txl.cli.report import show_report
from txl.core.errors import TxlError
from txl.core.scales import SCALES


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
    p.add_argument(
        "--scale",
        choices=SCALES,
        default="small",
        help="small runs on a CPU; paper is the published size",
    )
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="I/N",
        help="run only shard I of N (a job array, several machines)",
    )
    p.add_argument(
        "--corpus", help="train on this corpus instead of the experiment's (its results go to a folder of their own)"
    )
    p.add_argument(
        "--tokenizer", help="read the corpus with this tokenizer (auto, bytes, chars, words, sentencepiece, or a file)"
    )
    p.add_argument(
        "--vocab-size", type=int, help="sentencepiece pieces, or the most frequent words to keep (a folder of its own)"
    )
    p.add_argument("--steps", type=int, help="training steps per run")
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="train (and evaluate) every variant with seeds 0..N-1 (default: the experiment's)",
    )
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument(
        "--test",
        action="store_true",
        help=(
            "then score every variant's trained model on the test split, once, for reporting "
            "(variants are chosen on valid)"
        ),
    )
    add_overrides(p, help="override the base config of every variant")
    p.add_argument("--no-progress", action="store_true")
    add_launcher_args(p)


MAX_SEEDS = 1000


@command(
    "run", "run every variant of a named experiment; finished ones are skipped, interrupted ones resumed", _run_args
)
def cmd_run(args: argparse.Namespace) -> int:
    from txl.core.distributed import finish_distributed, launched
    from txl.study.registry import get_experiment, retarget
    from txl.study.sweep import run_experiment

    load_definitions()
    exp = retarget(get_experiment(args.name, args.scale), args.corpus, args.tokenizer, args.vocab_size)
    if args.seeds is not None:
        if not 1 <= args.seeds <= MAX_SEEDS:
            raise TxlError(f"--seeds must be in 1..{MAX_SEEDS} (each seed trains every variant), got {args.seeds}")
        exp.seeds = list(range(args.seeds))
    overrides = list(args.overrides)
    for flag, key in (("steps", "train.steps"), ("device", "train.device")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    root = Path(args.results)
    start = time.time()
    if args.launcher != "inline":
        return _launch(args, exp, overrides, start)
    exp.command = sweep(args, overrides, exp.seeds if args.seeds is not None else None).command()
    ok = False
    try:
        rows = run_experiment(exp, root, args.shard, overrides, progress=not args.no_progress)
        if args.test:
            rows = run_experiment(exp, root, args.shard, progress=not args.no_progress, split="test")
        ok = True
    finally:
        finish_distributed(ok)
    if not launched().main:
        return 0
    _finished(args, exp, rows, root, start)
    return 0


def _launch(args: argparse.Namespace, exp, overrides: list[str], start: float) -> int:
    """--launcher local|slurm: submit what is left as jobs; report once they are done (local, or slurm --wait)."""
    from txl.study.launch import launch
    from txl.study.registry import results_path
    from txl.study.results import read_results

    if args.shard != (0, 1):
        raise TxlError("--shard and --launcher do not go together: a launcher submits every job of the sweep")
    seeds = exp.seeds if args.seeds is not None else None
    submitted = launch(sweep(args, overrides, seeds), args.launcher, resources(args), args.test, args.wait)
    if args.launcher == "slurm" and not args.wait:
        print(f"submitted {len(submitted)} jobs; follow them with: {sweep(args, [], None).status_command()}")
        print(f"results come to {results_path(Path(args.results), exp)} as jobs finish (txl report reads them)")
        return 0
    _finished(args, exp, read_results(results_path(Path(args.results), exp), warn=False), Path(args.results), start)
    return 0


def _finished(args: argparse.Namespace, exp, rows: list, root: Path, start: float) -> None:
    """The report of a finished sweep, and where its files are."""
    from txl.study.registry import results_path

    mine = [r for r in rows if r.scale == exp.scale]
    plots = [
        show_report(exp, mine, root, split)["files"].get("png")
        for split in (["valid", "test"] if args.test else [None])
    ]
    print()
    print(f"finished in {time.time() - start:.0f} s; results {results_path(root, exp)}")
    print(f"plot         {', '.join(str(p) for p in plots)}")
    print(f"tensorboard  tensorboard --logdir {results_path(root, exp).parent}")
