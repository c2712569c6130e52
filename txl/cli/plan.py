"""txl plan: the per-layer memory plan that loses least under a budget, searched on a trained model."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from txl.cli.args import command
from txl.errors import TxlError


def _lengths(text: str) -> list[int]:
    """An argparse type: comma-separated memory lengths >= 0 (0 is a layer without memory)."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated lengths >= 0, e.g. 0,8,16,64, got {text!r}")
    return values


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN", help="a run folder or a checkpoint folder")
    b = p.add_mutually_exclusive_group(required=True)
    b.add_argument("--budget", type=int, metavar="POSITIONS", help="cached positions per sequence, summed over layers")
    b.add_argument("--budget-mib", type=float, metavar="MIB", help="MiB of cache per sequence (float32)")
    b.add_argument("--budget-of", metavar="PLAN", help="the cached positions of this memory plan, e.g. lrm=1@interleave:64,srm=8 "
                   "(its longest and shortest lengths then make the reference plans)")
    p.add_argument("--lengths", type=_lengths, help="the grid of per-layer memory lengths (default 0 and the longest trained /8, /4, /2, /1)")
    p.add_argument("--confirm", type=int, default=6, metavar="N", help="plans the sensitivities predict best that are evaluated (default 6)")
    p.add_argument("--refine", type=int, default=12, metavar="N", help="at most this many evaluations of the local search after (default 12)")
    p.add_argument("--split", choices=["valid", "test"], default="valid",
                   help="the split plans are chosen on (default valid; a plan chosen on test is not a fair test score)")
    p.add_argument("--max-segments", type=int, metavar="N", help="segments per evaluation (default: the run's eval.max_segments)")
    p.add_argument("--out", help="folder for plan-BUDGET.json/.md/.png (default: RUN/analysis)")
    p.add_argument("--append", metavar="EXPERIMENT", help="append the best and the reference plans to this experiment's results")
    p.add_argument("--scale", choices=["tiny", "small", "paper"], default="small", help="with --append: the experiment's scale (default small)")
    p.add_argument("--results", default="results", help="with --append: the results folder (default results/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--format", choices=["text", "markdown", "csv", "latex"], default="text",
                   help="how to print the table (csv and latex print the table alone; the rest goes to stderr)")
    p.add_argument("--no-progress", action="store_true", help="do not print each plan as it is evaluated")


def _experiment_of(args: argparse.Namespace, run, folder):
    """The experiment --append names, refused unless the run is one of its own models (in its runs folder)."""
    from txl.cli.experiments import load_definitions
    from txl.experiments import get_experiment, results_path, retarget

    load_definitions()
    exp = retarget(get_experiment(args.append, args.scale), run.data.corpus, run.data.tokenizer)
    runs = (results_path(Path(args.results), exp).parent / "runs").resolve()
    if runs not in Path(folder).resolve().parents:
        raise TxlError(f"{args.path} is not a model of {args.append} ({args.scale}), whose runs are under {runs}; "
                       "--append adds plans searched on the experiment's own models")
    return exp


@command("plan", "search the per-layer memory plan of least loss within a budget, beside Rae & Razavi's plans of that budget", _plan_args)
def cmd_plan(args: argparse.Namespace) -> int:
    from txl.analysis import image_to_tensorboard
    from txl.data import load_corpus
    from txl.devices import pick_precision
    from txl.evaluate import Plan, metric_name
    from txl.memory import MEMORY, parse_plan
    from txl.planning import UNITS, plan_cost, search_plan, search_table, write_search
    from txl.runs import load_trained, run_root

    for flag in ("confirm", "refine", "max_segments"):
        if getattr(args, flag) is not None and getattr(args, flag) < (0 if flag == "refine" else 1):
            raise TxlError(f"--{flag.replace('_', '-')} must be >= {0 if flag == 'refine' else 1}, got {getattr(args, flag)}")
    if (args.budget is not None and args.budget < 0) or (args.budget_mib is not None and not args.budget_mib >= 0):
        raise TxlError("the budget must be a number >= 0")
    if args.append and args.split == "test":
        raise TxlError("--append records plans chosen on valid; choose on valid, then score test with 'txl run EXPERIMENT --test'")
    model, run, folder = load_trained(args.path, args.device)
    exp = _experiment_of(args, run, folder) if args.append else None
    e = run.eval
    tgt_len = e.tgt_len or run.train.tgt_len
    base = Plan.of_run(run)
    unit, limit = ("mib", args.budget_mib) if args.budget_mib is not None else ("positions", args.budget)
    long = short = None
    if args.budget_of:
        try:
            lens = parse_plan(args.budget_of, run.model.n_layer, MEMORY)
        except ValueError as err:
            raise TxlError(f"--budget-of: {err}") from None
        limit = plan_cost(run.model, lens, tgt_len, unit, base)
        long, short = max(lens), min(lens)
    corpus = load_corpus(run.data, progress=not args.no_progress)
    metric = metric_name(corpus)
    say = (lambda s: None) if args.no_progress else (lambda s: print(s, file=sys.stderr))
    start = time.time()
    search = search_plan(model, corpus, args.split, tgt_len, e.batch_size, args.max_segments or e.max_segments, limit, unit,
                         args.lengths, pick_precision(run.train.precision, next(model.parameters()).device),
                         args.confirm, args.refine, say, base, long, short)
    title = (f"memory plan search on {folder}: budget {limit:g} {UNITS[unit]}, {corpus.name} {args.split} split "
             f"({search.trained.result['tokens']:,} tokens per plan)")
    stem = write_search(search, Path(args.out) if args.out else run_root(folder) / "analysis", title, metric)
    info = print if args.format in ("text", "markdown") else (lambda s: print(s, file=sys.stderr))
    info(title)
    print(search_table(search, metric, args.format, most=5))
    shown = 1 + len(search.references) + 5
    if len(search.evaluated) > shown:
        info(f"           ({len(search.evaluated) - shown} more plans in {stem}.md, in budget first)")
    if args.split != "valid":
        info(f"note       chosen on {args.split}: its score there is not a fair {args.split} score")
    segments = args.max_segments or e.max_segments
    info(f"best plan  {search.best.memory} (loss {search.best.loss:.4f}, cost {search.best.cost:g}); "
          f"{len(search.evaluated)} plans evaluated in {time.time() - start:.0f} s")
    info(f"check it   txl eval {args.path} --memory {search.best.memory} --split {args.split}"
         + (f" --max-segments {segments}" if segments else ""))
    if args.append:
        from txl.planning import append_plan_search

        added = append_plan_search(exp, Path(args.results), search, run, folder, corpus, tgt_len)
        where = f" --scale {args.scale}" + (f" --results {args.results}" if args.results != "results" else "")
        info(f"appended   {added} rows to the results of {args.append} ({args.scale}); 'txl report {args.append}{where}' draws them")
    tb = image_to_tensorboard(Path(f"{stem}.png"), run_root(folder) / "tb", f"analysis/{stem.name}")
    info(f"saved      {stem}.json, {stem}.md, {stem}.png; tensorboard {tb} (images)")
    return 0
