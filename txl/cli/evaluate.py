"""txl eval: a checkpoint under one or more memory plans, with loss by position within the segment."""

from __future__ import annotations

import argparse
import json
import time

from txl.cli.args import command
from txl.errors import TxlError


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a run folder (its last checkpoint) or a checkpoint folder")
    p.add_argument("--best", action="store_true", help="the run's best checkpoint instead of its last")
    p.add_argument("--protocol", metavar="NAME", help="a published evaluation protocol (txl list shows them); flags given beside it win")
    p.add_argument("--split", choices=["valid", "test"], help="default: the run's eval.split")
    p.add_argument("--memory", action="append", metavar="PLAN", help="memory plan to evaluate with; repeat to compare plans (default: as trained)")
    p.add_argument("--range", dest="attn_range", metavar="PLAN", help="attention range plan")
    p.add_argument("--tgt-len", type=int, help="segment length (default: the run's eval.tgt_len)")
    p.add_argument("--clamp-len", type=int, help="clamp relative distances at this value")
    p.add_argument("--same-length", action=argparse.BooleanOptionalAction, default=None, help="every query sees mem_len keys")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-segments", type=int, help="stop after this many segments (default: the whole split)")
    p.add_argument("--device", default="auto")
    p.add_argument("--corpus", help="evaluate on another corpus (a name or a path), read with the run's own tokenizer")
    p.add_argument("--tokenizer", help="with --corpus, for a model saved without its tokenizer: its vocabulary file")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--format", choices=["text", "markdown", "csv", "latex"], default="text", help="how to print the table")
    p.add_argument("--no-progress", action="store_true")


@command("eval", "evaluate a checkpoint under one or more memory plans; loss by position within the segment", _eval_args)
def cmd_eval(args: argparse.Namespace) -> int:
    from txl.data import load_corpus
    from txl.devices import pick_precision
    from txl.evaluate import Plan, evaluate_plans, metric_name, plans_tables
    from txl.protocols import get_protocol
    from txl.runs import load_trained, record_evaluation, run_root, tokenizer_file

    for flag in ("tgt_len", "batch_size", "max_segments"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise TxlError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.clamp_len is not None and args.clamp_len < 0:
        raise TxlError(f"--clamp-len must be >= 0, got {args.clamp_len}")
    model, run, folder = load_trained(args.path, args.device, "best" if args.best else "last")
    if args.corpus:  # the model's own tokenizer: unknown words map to its unknown symbol, and are counted
        run.data.corpus = args.corpus
        run.data.tokenizer = args.tokenizer or tokenizer_file(args.path, run)
    corpus = load_corpus(run.data, progress=not args.no_progress)
    if corpus.vocab_size != run.model.vocab_size:
        raise TxlError(f"corpus {run.data.corpus!r} has {corpus.vocab_size} tokens, the model {run.model.vocab_size}")
    e = run.eval
    proto = get_protocol(args.protocol) if args.protocol else None
    if proto is not None:
        e.split, e.tgt_len, e.memory, e.clamp_len = proto.split, proto.tgt_len, str(proto.mem_len), proto.clamp_len
        e.same_length, e.batch_size = proto.same_length, proto.batch_size
    split = args.split or e.split
    tgt_len = args.tgt_len or e.tgt_len or run.train.tgt_len
    same_length = args.same_length if args.same_length is not None else e.same_length
    clamp = args.clamp_len if args.clamp_len is not None else (e.clamp_len if e.clamp_len is not None else "keep")
    plans = [Plan.parse(text or "as trained", run.model.n_layer, text, args.attn_range or e.attn_range, same_length, clamp)
             for text in (args.memory or [e.memory])]
    if proto is not None and not args.json:
        print(f"protocol {proto.name}: {proto.settings()}; same_length rule {run.model.same_length_rule} (flags beside it win)")
    precision = pick_precision(run.train.precision, next(model.parameters()).device)
    results = evaluate_plans(model, corpus, plans, split, tgt_len, args.batch_size or e.batch_size, args.max_segments,
                             precision, not args.no_progress)
    unknown, metric = corpus.unknown.get(split), metric_name(corpus)
    record = {"checkpoint": str(folder), "corpus": corpus.name, "data": corpus.identity(), "split": split, "metric": metric,
              "protocol": proto.name if proto else None, "unknown_tokens": unknown, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "command": args.command_line, "results": results}
    purpose = "for choosing; report the test split once with --split test" if split == "valid" else "for reporting"
    header = (f"checkpoint {folder}; {split} split ({len(corpus.splits[split]):,} {corpus.unit}s, {purpose}), "
              f"segments of {tgt_len}, {corpus.name}")
    saved = record_evaluation(folder, record, f"# {header}\n\n" + plans_tables(results, metric, "markdown"))
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    if args.format in ("csv", "latex"):
        print(plans_tables(results, metric, args.format))
        return 0
    print(header)
    if unknown:
        total = len(corpus.splits[split])
        print(f"unknown    {unknown:,} of {total:,} {corpus.unit}s in {split} ({100 * unknown / max(total, 1):.2f}%) read as the unknown symbol")
    print(plans_tables(results, metric, args.format))
    print(f"saved      {saved}.json, {saved}.md; one line per plan in {run_root(folder) / 'evals.jsonl'}")
    return 0
