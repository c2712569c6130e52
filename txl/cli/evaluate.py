"""txl eval: a checkpoint under one or more memory plans, with loss by position within the segment."""

from __future__ import annotations

import argparse
import json
import sys

from txl.cli.args import add_plan_flags, command


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a run folder (its last checkpoint) or a checkpoint folder")
    p.add_argument("--best", action="store_true", help="the run's best checkpoint instead of its last")
    p.add_argument(
        "--protocol",
        metavar="NAME",
        help="a published evaluation protocol (txl list shows them); flags given beside it win",
    )
    p.add_argument(
        "--split",
        choices=["valid", "test", "whole"],
        help="default: the run's eval.split; with --corpus, whole (the text's three parts in order: all of a file)",
    )
    p.add_argument(
        "--memory",
        action="append",
        metavar="PLAN",
        help="memory plan to evaluate with; repeat to compare plans (default: as trained)",
    )
    add_plan_flags(p, attn=False)  # a trained model's attention variants stay as they are
    p.add_argument("--tgt-len", type=int, help="segment length (default: the run's eval.tgt_len)")
    p.add_argument("--clamp-len", type=int, help="clamp relative distances at this value")
    p.add_argument(
        "--same-length", action=argparse.BooleanOptionalAction, default=None, help="every query sees mem_len keys"
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-segments", type=int, help="stop after this many segments (default: the whole split)")
    p.add_argument("--device", default="auto")
    p.add_argument("--corpus", help="evaluate on another corpus (a name or a path), read with the run's own tokenizer")
    p.add_argument("--tokenizer", help="with --corpus, for a model saved without its tokenizer: its vocabulary file")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument(
        "--format", choices=["text", "markdown", "csv", "latex"], default="text", help="how to print the table"
    )
    p.add_argument("--no-progress", action="store_true")


@command(
    "eval", "evaluate a checkpoint under one or more memory plans; loss by position within the segment", _eval_args
)
def cmd_eval(args: argparse.Namespace) -> int:
    from txl.evaluation.evaluate import check_flags, evaluate_plans, metric_name, plans_tables
    from txl.model.dimensions import at_eval
    from txl.train.run_evals import evaluation_header, evaluation_record, record_evaluation
    from txl.train.runs import load_trained

    names = ("split", "tgt_len", "batch_size", "max_segments", *(d.flag for n, d in at_eval().items() if n != "memory"))
    flags = {k: getattr(args, k) for k in names}
    flags.update(same_length=args.same_length, clamp_len=args.clamp_len, corpus=args.corpus, tokenizer=args.tokenizer)
    check_flags(flags)
    trained = load_trained(args.path, args.device, "best" if args.best else "last")
    spec = trained.spec(args.protocol, whole_split=True, **flags)
    corpus = trained.corpus(spec, progress=not args.no_progress)
    plans = spec.plans(args.memory)
    if spec.protocol is not None and not args.json:
        rule = trained.run.model.same_length_rule
        print(
            f"protocol {spec.protocol.name}: {spec.protocol.settings()}; same_length rule {rule} (flags beside it win)"
        )
    results = evaluate_plans(trained.model, corpus, spec, plans, not args.no_progress)
    metric = metric_name(corpus)
    record = evaluation_record(trained, spec, corpus, results, args.command_line)
    header = evaluation_header(trained, spec, corpus)
    try:
        saved = record_evaluation(trained.folder, record, f"# {header}\n\n" + plans_tables(results, metric, "markdown"))
    except OSError as e:  # a read-only run folder: the results are still printed, then the failure named
        saved, unsaved = None, f"txl eval: error: could not save the evaluation in {trained.root} ({e.strerror or e})"
    if args.json:
        print(json.dumps(record, indent=2))
    elif args.format in ("csv", "latex"):
        print(plans_tables(results, metric, args.format))
    else:
        _print_tables(args, header, spec, corpus, results, metric, saved, trained)
    if saved is None:
        print(unsaved, file=sys.stderr)
        return 2
    return 0


def _print_tables(args, header, spec, corpus, results, metric, saved, trained) -> None:
    from txl.evaluation.evaluate import plans_tables

    print(header)
    if unknown := corpus.unknown.get(spec.split):
        total = len(corpus.splits[spec.split])
        share = f"{100 * unknown / max(total, 1):.2f}%"
        print(
            f"unknown    {unknown:,} of {total:,} {corpus.unit}s in {spec.split} ({share}) read as the unknown symbol"
        )
    print(plans_tables(results, metric, args.format))
    total, scored = len(corpus.splits[spec.split]), results[0].tokens
    if scored < total:  # the split is read as parallel streams of whole segments: say what was left out, and why
        print(
            f"scored     {scored:,} of the {total:,} {corpus.unit}s: the split is read as {results[0].segments:,} "
            "segments in parallel streams, each stream's ragged end (and, with --max-segments, the rest) left out"
        )
    if saved is not None:
        print(f"saved      {saved}.json, {saved}.md; one line per plan in {trained.root / 'evals.jsonl'}")
