"""txl plan: the per-layer memory plan that loses least under a budget, searched on a trained model."""

from __future__ import annotations

import argparse
import logging
import re
import time
from pathlib import Path

from txl.cli.args import Once, command, grid_args, say, typed_choices
from txl.core.errors import TxlError
from txl.core.io import shown
from txl.core.scales import SCALES


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN", help="a run folder or a checkpoint folder")
    b = p.add_mutually_exclusive_group(required=True)
    b.add_argument("--budget", type=int, metavar="POSITIONS", help="cached positions per sequence, summed over layers")
    b.add_argument(
        "--budget-mib",
        type=float,
        metavar="MIB",
        help="MiB of cache per sequence, each layer at the precision it stores (fp32 unless --memory-dtype, --dtypes)",
    )
    b.add_argument(
        "--budget-of",
        metavar="PLAN",
        help="the cached positions of this memory plan, e.g. lrm=1@interleave:64,srm=8 "
        "(its longest and shortest lengths then make the reference plans)",
    )
    p.add_argument(
        "--lengths",
        type=typed_choices("parse_lengths"),
        help="the grid of per-layer memory lengths (default 0 and the longest trained /8, /4, /2, /1)",
    )
    p.add_argument(
        "--confirm",
        type=int,
        default=6,
        metavar="N",
        help="plans the sensitivities predict best that are evaluated (default 6)",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=12,
        metavar="N",
        help="at most this many evaluations of the local search after (default 12)",
    )
    p.add_argument(
        "--memory-dtype",
        action=Once,
        metavar="PLAN",
        help="how every plan (searched and Rae & Razavi's) stores its memory, e.g. int8: with --budget-mib the "
        "search then spends the bytes at that precision (fp32 bf16 fp16 fp8 int8 int4, per layer)",
    )
    grid_args(p.add_argument_group("choices searched beside the lengths (with --budget-mib, spent in bytes together)"))
    p.add_argument(
        "--split",
        choices=["valid", "test"],
        default="valid",
        help="the split plans are chosen on (default valid; a plan chosen on test is not a fair test score)",
    )
    p.add_argument(
        "--max-segments", type=int, metavar="N", help="segments per evaluation (default: the run's eval.max_segments)"
    )
    _output_args(p)


def _output_args(p: argparse.ArgumentParser) -> None:
    """Where the search's results go, and how they are shown."""
    p.add_argument("--out", help="folder for plan-BUDGET.json/.md/.png (default: RUN/analysis)")
    p.add_argument(
        "--append", metavar="EXPERIMENT", help="append the best and the reference plans to this experiment's results"
    )
    p.add_argument(
        "--scale",
        choices=SCALES,
        default="small",
        help="with --append: the experiment's scale (default small)",
    )
    p.add_argument("--results", default="results", help="with --append: the results folder (default results/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument(
        "--format",
        choices=["text", "markdown", "csv", "latex"],
        default="text",
        help="how to print the table (csv and latex print the table alone; the rest goes to stderr)",
    )
    p.add_argument("--no-progress", action="store_true", help="do not print each plan as it is evaluated")


def _experiment_of(args: argparse.Namespace, run, folder):
    """The experiment --append names, refused unless the run is one of its own models (in its runs folder)."""
    from txl.cli.args import load_definitions
    from txl.study.registry import get_experiment, results_path, retarget

    load_definitions()
    exp = retarget(get_experiment(args.append, args.scale), run.data.corpus, run.data.tokenizer)
    runs = (results_path(Path(args.results), exp).parent / "runs").resolve()
    if runs not in Path(folder).resolve().parents:
        raise TxlError(
            f"{args.path} is not a model of {args.append} ({args.scale}), whose runs are under {runs}; "
            "--append adds plans searched on the experiment's own models"
        )
    return exp


@command(
    "plan",
    "search the per-layer memory plan of least loss within a budget, beside Rae & Razavi's plans of that budget",
    _plan_args,
)
def cmd_plan(args: argparse.Namespace) -> int:
    from txl.core.log import setup as setup_log
    from txl.evaluation.analysis import image_to_tensorboard
    from txl.evaluation.evaluate import check_flags, metric_name
    from txl.model.dimensions import searched
    from txl.search.results import write_search
    from txl.search.search import UNITS, check_budget, resolve_budget, search_plan
    from txl.train.runs import load_trained

    for flag, least in (("confirm", 1), ("refine", 0)):
        if getattr(args, flag) < least:
            raise TxlError(f"--{flag} must be >= {least}, got {getattr(args, flag)}")
    check_flags({"max_segments": args.max_segments})
    check_budget(args.budget, args.budget_mib, args.budget_of)
    if args.append and args.split == "test":
        raise TxlError(
            "--append records plans chosen on valid; choose on valid, then score test with 'txl run EXPERIMENT --test'"
        )
    trained = load_trained(args.path, args.device)
    exp = _experiment_of(args, trained.run, trained.folder) if args.append else None
    spec = trained.spec(split=args.split, max_segments=args.max_segments, memory_dtype=args.memory_dtype)
    limit, unit, long, short = resolve_budget(trained.run.model, spec, args.budget, args.budget_mib, args.budget_of)
    corpus = trained.corpus(spec, progress=not args.no_progress)
    metric = metric_name(corpus)
    setup_log(logging.WARNING if args.no_progress else logging.INFO)  # each plan as it is evaluated
    start = time.time()
    grids = {dim.flag: getattr(args, dim.grid.replace("-", "_")) for dim in searched().values()}
    grids = {flag: values for flag, values in grids.items() if values}
    search = search_plan(
        trained.model, corpus, spec, limit, unit, args.lengths, args.confirm, args.refine, long, short, grids
    )
    title = (
        f"memory plan search on {shown(trained.folder)}: budget {limit:g} {UNITS[unit]}"
        + (f", memory stored as {args.memory_dtype}" if args.memory_dtype else "")
        + "".join(f", {f.replace('_', ' ')} chosen from {','.join(map(str, v))}" for f, v in grids.items())
        + f", {corpus.name} {args.split} split "
        f"({search.trained.result.tokens:,} tokens per plan)"
    )
    tag = "-" + re.sub(r"[^A-Za-z0-9]+", "-", args.memory_dtype).strip("-") if args.memory_dtype else ""
    tag += "".join(  # '16/4:mean' as 16_4_mean: values stay apart in the file name
        "-" + "-".join(re.sub(r"[^A-Za-z0-9]+", "_", str(v)).strip("_") for v in values) for values in grids.values()
    )
    stem = write_search(search, Path(args.out) if args.out else trained.root / "analysis", title, metric, tag)
    _print_search(args, trained, spec, search, stem, title, metric, time.time() - start)
    if args.append:
        from txl.search.results import append_plan_search

        added = append_plan_search(exp, Path(args.results), search, trained.run, trained.folder, corpus, spec.tgt_len)
        where = f" --scale {args.scale}" + (f" --results {args.results}" if args.results != "results" else "")
        say(
            args,
            f"appended   {added} rows to the results of {args.append} ({args.scale}); "
            f"'txl report {args.append}{where}' draws them",
        )
    tb = image_to_tensorboard(Path(f"{stem}.png"), trained.root / "tb", f"analysis/{stem.name}")
    say(args, f"saved      {stem}.json, {stem}.md, {stem}.png; tensorboard {tb} (images)")
    return 0


def _print_search(args, trained, spec, search, stem: Path, title: str, metric: str, seconds: float) -> None:
    from txl.search.results import search_notes, search_table

    say(args, title)
    print(search_table(search, metric, args.format, most=5))
    for line in search_notes(search, stem, seconds, args.path, spec.max_segments):
        say(args, line)
