"""The `txl` command: thin subcommands over the library.

Errors a user can fix print one line (`txl: error: ...`) and exit with status 2;
Ctrl-C exits with status 130 and leaves every file whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from txl.errors import TxlError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function as `txl NAME`; `add_args` declares its options."""

    def deco(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, add_args, run)
        return run

    return deco


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------- shared arguments


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (flags override --config; --set overrides both)")
    g.add_argument("--config", metavar="FILE", help="a JSON run or model config to start from")
    g.add_argument("--layers", type=int, metavar="N", help="number of layers")
    g.add_argument("--d-model", type=int, metavar="D")
    g.add_argument("--n-head", type=int, metavar="H")
    g.add_argument("--d-head", type=int, metavar="DH", help="per-head width (default d_model / n_head)")
    g.add_argument("--d-inner", type=int, metavar="DI", help="feed-forward width (default 4 d_model)")
    g.add_argument("--vocab", type=int, metavar="V", help="vocabulary size")
    g.add_argument("--same-length", action="store_true", default=None, help="every query sees at most mem_len keys")
    g.add_argument(
        "--range", dest="attn_range", metavar="PLAN", help="attention range per layer, e.g. 'range=128@first:12' (default unlimited)"
    )
    g.add_argument("--attn", metavar="PLAN", help="attention variant per layer, e.g. 'attn=las@first:6,xl' (default xl)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="e.g. model.layers.3.mem_len=512 (repeatable)")


def model_config_from_args(args: argparse.Namespace, memory: str | None):
    """The model config a command's flags describe, validated."""
    from txl.config import ModelConfig, RunConfig, apply_overrides, load_config
    from txl.memory import apply_plans

    run = load_config(args.config) if args.config else RunConfig()
    cfg = run.model
    if args.layers is not None:
        cfg.n_layer = args.layers
    if args.d_model is not None:
        cfg.d_model = args.d_model
        if args.d_inner is None and not args.config:
            cfg.d_inner = 4 * args.d_model
    if args.n_head is not None:
        cfg.n_head = args.n_head
    if args.d_model is not None or args.n_head is not None or args.d_head is not None:
        cfg.d_head = args.d_head if args.d_head is not None else max(1, cfg.d_model // cfg.n_head)
    if args.d_inner is not None:
        cfg.d_inner = args.d_inner
    if args.vocab is not None:
        cfg.vocab_size = args.vocab
    if args.same_length:
        cfg.same_length = True
    run.model = apply_plans(cfg, memory=memory, attn_range=args.attn_range, attn=args.attn)
    apply_overrides(run, args.overrides)
    run.model.validate()
    assert isinstance(run.model, ModelConfig)
    return run.model


# --------------------------------------------------------------------------- txl budget


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--memory",
        action="append",
        metavar="PLAN",
        help="memory plan, e.g. '24x512' or 'lrm=4@interleave:2304,srm=128'; give several to compare them",
    )
    add_model_args(p)
    g = p.add_argument_group("what to count")
    g.add_argument("--tgt-len", type=int, default=512, metavar="T", help="segment length (default 512)")
    g.add_argument("--batch", type=int, default=1, metavar="B", help="sequences (default 1)")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="cache dtype")
    g.add_argument("--markdown", action="store_true", help="Markdown tables")
    g.add_argument("--json", action="store_true", help="print JSON instead of tables")


@command("budget", "what a memory plan costs: cached positions, bytes, FLOPs per token, parameters, receptive field", _budget_args)
def cmd_budget(args: argparse.Namespace) -> int:
    from txl.budget import budget, compare_table, layer_table, summary_lines

    if args.tgt_len < 1 or args.batch < 1:
        raise TxlError("--tgt-len and --batch must be >= 1")
    plans = args.memory or [None]
    budgets = [budget(model_config_from_args(args, plan), args.tgt_len, args.batch, args.dtype, plan) for plan in plans]
    if args.json:
        print(json.dumps([b.to_dict() for b in budgets] if len(budgets) > 1 else budgets[0].to_dict(), indent=2))
        return 0
    for b in budgets:
        print(layer_table(b, args.markdown))
        print()
        print(summary_lines(b))
        print()
    if len(budgets) > 1:
        print(compare_table(budgets, args.markdown))
    return 0


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    from txl import __version__

    parser = Parser(
        prog="txl",
        description="Transformer-XL language models with per-layer memory plans: train, evaluate, and measure "
        "how much memory a model needs.",
        epilog="Run 'txl COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"txl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (help, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        add_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command][2](args) or 0
    except TxlError as e:
        print(f"txl {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"\ntxl {args.command}: interrupted; files written so far are whole", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
