"""txl analyze: what a trained model does with its memory (where each layer looks, per-layer sensitivity, context
ablation)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from txl.cli.args import Parser, command, int_list, say
from txl.core.errors import TxlError
from txl.core.io import shown


def _analyze_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", parser_class=Parser, required=True)
    s = sub.add_parser(
        "sensitivity",
        help="cut one layer's memory at a time: how much the loss rises, with intervals",
        description="Cut one layer's memory at a time (to 0 and to a short length), the others as trained, "
        "and measure the loss rise over the model as trained, with a paired bootstrap interval.",
    )
    s.add_argument("path", help="a run folder or a checkpoint folder")
    s.add_argument(
        "--short", type=int, help="the short length to cut to besides 0 (default: an eighth of the longest memory)"
    )
    s.add_argument(
        "--split", choices=["valid", "test"], default="valid", help="default valid: analyses choose, they do not report"
    )
    s.add_argument("--max-segments", type=int, help="segments to evaluate (default: the run's eval.max_segments)")
    s.add_argument("--out", help="folder for sensitivity.json/.md/.png (default: RUN/analysis)")
    s.add_argument("--device", default="auto")
    s.add_argument("--format", choices=["text", "markdown", "csv", "latex"], default="text")
    s.add_argument("--no-progress", action="store_true")

    c = sub.add_parser(
        "context",
        help="loss as the usable context is cut to d tokens (or the far part shuffled or replaced)",
        description="Context ablation after Khandelwal et al. (2018): loss on the last tokens of a window as the "
        "usable context before them is cut to d tokens, or the farther context is shuffled or replaced by other "
        "text; one curve per run, all runs on one plot, and each run's effective context.",
    )
    c.add_argument("paths", nargs="+", help="run folders or checkpoint folders")
    c.add_argument(
        "--lengths",
        type=lambda t: sorted({0, *int_list(t)}),
        default=[0, 4, 16, 64, 256, 1024],
        help="context lengths d (0 is always added; default 0,4,16,64,256,1024)",
    )
    c.add_argument("--score", type=int, default=16, help="scored tokens at the end of each window (default 16)")
    c.add_argument("--windows", type=int, default=64, help="windows drawn from the split (default 64)")
    c.add_argument(
        "--tolerance", type=float, default=0.01, help="effective context: within this many nats of the longest"
    )
    c.add_argument("--split", choices=["valid", "test"], default="valid")
    c.add_argument("--out", help="folder for context.json and context.png (default: the first run's analysis/)")
    c.add_argument("--device", default="auto")
    c.add_argument("--format", choices=["text", "markdown", "csv", "latex"], default="text")
    c.add_argument("--no-progress", action="store_true", help="no line per run as it is measured")

    a = sub.add_parser(
        "attention",
        help="where each layer looks: attention mass by distance, in memory, beyond k tokens",
        description="Attention probability mass per layer and head by log-spaced distance, the mean "
        "attended distance and the mass in memory and beyond k tokens, summed over an evaluation.",
    )
    a.add_argument("path", help="a run folder or a checkpoint folder")
    a.add_argument("--split", choices=["valid", "test"], default="valid")
    a.add_argument("--max-segments", type=int, help="segments to evaluate (default: the run's eval.max_segments)")
    a.add_argument("--out", help="folder for attention.json and attention.png (default: RUN/analysis)")
    a.add_argument("--device", default="auto")
    a.add_argument("--format", choices=["text", "markdown", "csv", "latex"], default="text")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_attention(args: argparse.Namespace) -> int:
    from txl.core.io import atomic_write_json
    from txl.evaluation.analysis import attention_mass, attention_table, image_to_tensorboard, plot_attention
    from txl.evaluation.evaluate import check_flags
    from txl.train.runs import load_trained

    check_flags({"max_segments": args.max_segments})
    trained = load_trained(args.path, args.device)
    spec = trained.spec(split=args.split, max_segments=args.max_segments)
    corpus = trained.corpus(spec, progress=not args.no_progress)
    result = attention_mass(trained.model, corpus, spec, progress=not args.no_progress)
    out = Path(args.out) if args.out else trained.root / "analysis"
    where = f"{shown(trained.folder)} on {corpus.name}, {args.split} split ({result['tokens']:,} tokens)"
    title = f"where each layer looks: {where}"
    atomic_write_json(out / "attention.json", {"title": title, **result})
    plot_attention(result, out / "attention.png", title)
    tb = out / "tb" if args.out else trained.root / "tb"  # nothing written in the run given --out
    tb = image_to_tensorboard(out / "attention.png", tb, "analysis/attention")
    say(args, title)
    print(attention_table(result, trained.model.cfg, args.format))
    say(args, f"json      {out / 'attention.json'}\npng       {out / 'attention.png'}\ntensorboard {tb} (images)")
    return 0


def cmd_context(args: argparse.Namespace) -> int:
    from txl.core.io import atomic_write_json
    from txl.evaluation.analysis import image_to_tensorboard
    from txl.evaluation.context_ablation import (
        context_curve,
        context_table,
        effective_context_interval,
        plot_context,
        recl,
    )
    from txl.train.runs import load_trained

    if args.score < 1 or args.windows < 1:
        raise TxlError("--score and --windows must be >= 1")
    if not args.tolerance >= 0 or args.tolerance == float("inf"):  # nan fails the first test
        raise TxlError(f"--tolerance must be a finite number of nats >= 0, got {args.tolerance}")
    curves, effective, roots = {}, {}, []
    for path in args.paths:
        trained = load_trained(path, args.device)
        roots.append(trained.root)
        spec = trained.spec(split=args.split)
        corpus = trained.corpus(spec)
        if not args.no_progress:
            what = f"{len(args.lengths)} context lengths x 3 conditions, {args.windows} windows"
            print(f"{path}: {what} ...", file=sys.stderr)
        curves[path] = context_curve(trained.model, corpus, spec, args.lengths, args.score, args.windows)
        effective[path] = effective_context_interval(curves[path], args.tolerance, args.score)
    out = Path(args.out) if args.out else roots[0] / "analysis"  # the (first) run's, wherever this runs from
    atomic_write_json(
        out / "context.json",
        {
            "split": args.split,
            "score": args.score,
            "windows": args.windows,
            "tolerance": args.tolerance,
            "curves": curves,
            "effective_context": {p: {"at_most": d, "lo": lo, "hi": hi} for p, (d, lo, hi) in effective.items()},
        },
    )
    plot_context(
        curves,
        out / "context.png",
        f"context ablation, {args.split} split, last {args.score} tokens of {args.windows} windows",
    )
    tb = image_to_tensorboard(out / "context.png", out / "tb" if args.out else roots[0] / "tb", "analysis/context")
    print(context_table(curves, args.format))
    for path, (d, lo, hi) in effective.items():
        say(
            args,
            f"effective context of {path}: at most {d} tokens on this grid (within {args.tolerance} nats of the "
            f"longest context; 95% over windows: {lo}..{hi})",
        )
    if len(curves) > 1:  # Dai et al.'s relative effective context length, over this group of runs
        for path, (c, bound) in recl(curves).items():
            at_least = ">= " if bound else ""
            say(args, f"RECL of {path}: {at_least}{c} tokens (r = 0.1, relative gain under 0.01; this group of runs)")
    say(args, f"json      {out / 'context.json'}\npng       {out / 'context.png'}\ntensorboard {tb} (images)")
    return 0


@command(
    "analyze", "what a trained model does with its memory: where each layer looks, sensitivity, context", _analyze_args
)
def cmd_analyze(args: argparse.Namespace) -> int:
    if args.analysis == "context":
        return cmd_context(args)
    if args.analysis == "attention":
        return cmd_attention(args)
    from txl.core.log import setup as setup_log
    from txl.evaluation.analysis import image_to_tensorboard, layer_sensitivity, sensitivity_table, write_sensitivity
    from txl.train.runs import load_trained

    if (args.short is not None and args.short < 1) or (args.max_segments is not None and args.max_segments < 1):
        raise TxlError("--short and --max-segments must be >= 1")
    trained = load_trained(args.path, args.device)
    spec = trained.spec(split=args.split, max_segments=args.max_segments)
    corpus = trained.corpus(spec, progress=not args.no_progress)
    start = time.time()
    setup_log(logging.WARNING if args.no_progress else logging.INFO)  # each cut as it is evaluated
    base, rows = layer_sensitivity(trained.model, corpus, spec, args.short, not args.no_progress)
    title = f"memory sensitivity of {shown(trained.folder)} on {corpus.name}, {args.split} split"
    files = write_sensitivity(base, rows, corpus, Path(args.out) if args.out else trained.root / "analysis", title)
    tb = Path(args.out) / "tb" if args.out else trained.root / "tb"  # nothing written in the run given --out
    files["tensorboard"] = image_to_tensorboard(files["png"], tb, "analysis/sensitivity")
    seconds = time.time() - start
    say(args, f"{title}: as trained, loss {base.loss:.4f} nats/token over {base.tokens:,} tokens ({seconds:.0f} s)")
    print(sensitivity_table(rows, args.format))
    for kind, path in files.items():
        say(args, f"{kind:<9} {path}")
    return 0
