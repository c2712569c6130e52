"""txl budget: what a memory plan costs."""

from __future__ import annotations

import argparse
import json

from txl.cli.args import add_model_args, command
from txl.cli.configs import config_file, model_config_from_args
from txl.core.errors import TxlError


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--memory",
        action="append",
        metavar="PLAN",
        help="memory plan, e.g. '24x512' or 'lrm=4@interleave:2304,srm=128'; give several to compare them",
    )
    add_model_args(p)
    g = p.add_argument_group("what to count")
    g.add_argument(
        "--tgt-len", type=int, metavar="T", help="segment length (default: a run --config's train.tgt_len, else 512)"
    )
    g.add_argument("--batch", type=int, default=1, metavar="B", help="sequences (default 1)")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="cache dtype")
    g.add_argument("--markdown", action="store_true", help="Markdown tables")
    g.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _run_lengths(config: str | None) -> tuple[int, int] | None:
    """The segment lengths a run config trains and evaluates with (a model config alone: None, then 512)."""
    if not config:
        return None
    from txl.config import load_config

    run = load_config(config_file(config))
    return run.train.tgt_len, run.eval.tgt_len or run.train.tgt_len


@command(
    "budget",
    "what a memory plan costs: cached positions, bytes, FLOPs per token, parameters, receptive field",
    _budget_args,
)
def cmd_budget(args: argparse.Namespace) -> int:
    from txl.model.budget import budget, budgets_text, reach_text, step_bytes

    lengths = _run_lengths(args.config)
    evaluated = lengths[1] if lengths and args.tgt_len is None and lengths[1] != lengths[0] else None
    if args.tgt_len is None:  # a run's config says how long its segments are
        args.tgt_len = lengths[0] if lengths else 512
    if args.tgt_len < 1 or args.batch < 1:
        raise TxlError("--tgt-len and --batch must be >= 1")
    plans = args.memory or [None]
    cfgs = [model_config_from_args(args, plan) for plan in plans]
    budgets = [budget(cfg, args.tgt_len, args.batch, args.dtype, plan) for cfg, plan in zip(cfgs, plans)]
    if args.json:
        out = [
            {
                **b.to_dict(),
                "step_bytes": {"training": step_bytes(c, b), "evaluation": step_bytes(c, b, training=False)},
            }
            for c, b in zip(cfgs, budgets)
        ]
        print(json.dumps(out if len(out) > 1 else out[0], indent=2))
    else:
        print(budgets_text(budgets, args.markdown, cfgs))
    for b, cfg in zip(budgets, cfgs if evaluated and not args.json else []):  # txl eval's segment: another reach
        at_eval = budget(cfg, evaluated, args.batch, args.dtype, b.label)
        print(
            f"{b.label}: the receptive field above is over the training segment ({args.tgt_len}); txl eval scores "
            f"segments of {evaluated} (eval.tgt_len), where it is {reach_text(at_eval)} tokens"
        )
    return 0
