"""txl run's launcher flags (--launcher slurm|local and the resources a job asks for), and txl status."""

from __future__ import annotations

import argparse

from txl.cli.args import command, load_definitions
from txl.core.errors import TxlError
from txl.core.scales import SCALES
from txl.core.table import format_table


def add_launcher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (with --launcher slurm or local; needs pip install -e '.[cluster]')")
    g.add_argument(
        "--launcher",
        choices=["inline", "local", "slurm"],
        default="inline",
        help="inline: every job in this process (default); local: parallel processes here; slurm: submitted "
        "jobs, each training run one job, evaluations after the training they need",
    )
    g.add_argument("--wait", action="store_true", help="slurm: follow the jobs until they end, then report")
    g.add_argument("--partition", help="slurm partition")
    g.add_argument("--account", help="slurm account")
    g.add_argument("--gpus-per-job", type=int, default=0, metavar="G", help="GPUs per training job (DDP over them)")
    g.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes per training job")
    g.add_argument(
        "--time",
        type=int,
        metavar="MIN",
        help="a job's time limit in minutes (30 tiny, 240 small, 2880 paper)",
    )
    g.add_argument(
        "--cpus-per-job",
        type=int,
        metavar="C",
        help="CPUs per task (slurm: cpus-per-task; local: each job's CPU threads, by default the cores / --parallel)",
    )
    g.add_argument("--parallel", type=int, default=2, metavar="P", help="local: jobs at once (default 2)")
    g.add_argument(
        "--slurm",
        dest="slurm_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. --slurm qos=high --slurm mem=32G (repeatable)",
    )


def resources(args: argparse.Namespace):
    from txl.study.cluster import Resources

    extra = {}
    for item in args.slurm_options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TxlError(f"--slurm takes KEY=VALUE (an sbatch option without its dashes), got {item!r}")
        extra[key.strip().lstrip("-").replace("-", "_")] = value  # as submitit names its own: the one given wins
    return Resources(
        args.partition, args.gpus_per_job, args.nodes, args.time, args.account, args.cpus_per_job, extra, args.parallel
    ).check()


def sweep(args: argparse.Namespace, overrides: list[str], seeds: list[int] | None):
    """The sweep as a job rebuilds it: names and flags (jobs register the definitions first, as this does)."""
    from pathlib import Path

    from txl.study.cluster import Sweep

    load_definitions()
    root = str(Path(args.results).resolve())  # a job may start in another folder
    return Sweep(
        args.name,
        args.scale,
        root,
        args.corpus,
        args.tokenizer,
        seeds,
        overrides,
        setup=load_definitions,
        launcher=tuple(launcher_flags(args)),
        test=bool(getattr(args, "test", False)),
        vocab_size=getattr(args, "vocab_size", None),
    )


def launcher_flags(args: argparse.Namespace) -> list[str]:
    """The launcher flags given to txl run (none for the inline runner), as a command repeats them."""
    launcher = getattr(args, "launcher", "inline")
    if launcher == "inline":
        return []
    out = ["--launcher", launcher] + (["--wait"] if args.wait else [])
    for flag, value, default in (
        ("--partition", args.partition, None),
        ("--account", args.account, None),
        ("--gpus-per-job", args.gpus_per_job, 0),
        ("--nodes", args.nodes, 1),
        ("--time", args.time, None),
        ("--cpus-per-job", args.cpus_per_job, None),
        ("--parallel", args.parallel, 2),
    ):
        out += [flag, str(value)] if value != default else []
    return out + [x for o in args.slurm_options for x in ("--slurm", o)]


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="an experiment name (txl list)")
    p.add_argument("--scale", choices=SCALES, default="small")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--corpus", help="as given to txl run")
    p.add_argument("--tokenizer", help="as given to txl run")
    p.add_argument("--vocab-size", type=int, help="as given to txl run")


@command(
    "status", "each job of a sweep: done, queued, running or failed (with its log), and what is left", _status_args
)
def cmd_status(args: argparse.Namespace) -> int:
    from txl.study.launch import status

    rows, submitted, test = status(sweep(args, [], None))
    flags = [f"--set {o}" for o in submitted.overrides] + (["--test"] if test else [])
    flags += [f"--seeds {len(submitted.seeds)}"] if submitted.seeds is not None else []
    print(f"{args.name} ({args.scale}) as last submitted{': ' + ' '.join(flags) if flags else ''}\n")
    table = [[s.key, s.kind, s.state.lower(), s.job_id or "-", s.detail or "", s.log or ""] for s in rows]
    print(format_table(["job", "kind", "state", "job id", "detail", "log"], table))
    left = [s.key for s in rows if s.needs_submitting]
    counts = {}
    for s in rows:
        counts[s.state.lower()] = counts.get(s.state.lower(), 0) + 1
    print("\n" + ", ".join(f"{n} {state}" for state, n in counts.items()))
    if left:
        print(f"txl run would submit {len(left)}: {', '.join(left[:6])}{', ...' if len(left) > 6 else ''}")
    else:
        print("txl run would submit nothing")
    return 0
