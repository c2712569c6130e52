"""txl analyze: what a trained model does with its memory (so far: per-layer memory sensitivity)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from txl.cli.args import Parser, command
from txl.errors import TxlError


def _analyze_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", parser_class=Parser, required=True)
    s = sub.add_parser("sensitivity", help="cut one layer's memory at a time: how much the loss rises, with intervals",
                       description="Cut one layer's memory at a time (to 0 and to a short length), the others as trained, "
                       "and measure the loss rise over the model as trained, with a paired bootstrap interval.")
    s.add_argument("path", help="a run folder or a checkpoint folder")
    s.add_argument("--short", type=int, help="the short length to cut to besides 0 (default: an eighth of the longest memory)")
    s.add_argument("--split", choices=["valid", "test"], default="valid", help="default valid: analyses choose, they do not report")
    s.add_argument("--max-segments", type=int, help="segments to evaluate (default: the run's eval.max_segments)")
    s.add_argument("--out", help="folder for sensitivity.json/.md/.png (default: RUN/analysis)")
    s.add_argument("--device", default="auto")
    s.add_argument("--format", choices=["text", "markdown", "csv", "latex"], default="text")
    s.add_argument("--no-progress", action="store_true")


@command("analyze", "what a trained model does with its memory: per-layer memory sensitivity", _analyze_args)
def cmd_analyze(args: argparse.Namespace) -> int:
    from txl.analysis import layer_sensitivity, sensitivity_table, write_sensitivity
    from txl.data import load_corpus
    from txl.devices import pick_precision
    from txl.runs import load_trained, run_root

    if (args.short is not None and args.short < 1) or (args.max_segments is not None and args.max_segments < 1):
        raise TxlError("--short and --max-segments must be >= 1")
    model, run, folder = load_trained(args.path, args.device)
    corpus = load_corpus(run.data, progress=not args.no_progress)
    e = run.eval
    start = time.time()
    base, rows = layer_sensitivity(
        model, corpus, args.split, e.tgt_len or run.train.tgt_len, e.batch_size, args.max_segments or e.max_segments,
        pick_precision(run.train.precision, next(model.parameters()).device), args.short, not args.no_progress,
        say=lambda s: None if args.no_progress else print(s, file=sys.stderr),
    )
    title = f"memory sensitivity of {folder} on {corpus.name}, {args.split} split"
    files = write_sensitivity(base, rows, corpus, Path(args.out) if args.out else run_root(folder) / "analysis", title)
    print(f"{title}: as trained, loss {base['loss']:.4f} nats/token over {base['tokens']:,} tokens ({time.time() - start:.0f} s)")
    print(sensitivity_table(rows, args.format))
    for kind, path in files.items():
        print(f"{kind:<9} {path}")
    return 0
