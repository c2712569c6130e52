"""txl list: the named experiments, presets, attention variants and evaluation protocols."""

from __future__ import annotations

import argparse

from txl.cli.args import command, load_definitions
from txl.core.errors import TxlError


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="a glob over experiment names, e.g. 'rae2020/*'")


@command("list", "named experiments, presets and attention variants", _list_args)
def cmd_list(args: argparse.Namespace) -> int:
    from txl.attention import VARIANTS
    from txl.core.table import format_table
    from txl.evaluation.protocols import PROTOCOLS
    from txl.study.registry import list_experiments
    from txl.train.presets import PRESETS

    load_definitions()
    found = list_experiments(args.pattern)
    if not found:
        raise TxlError(f"no experiment matches {args.pattern!r} (try 'txl list')")
    print(format_table(["experiment", "what it compares"], found))
    if args.pattern == "*":
        print()
        print(format_table(["preset", "what it is"], [[n, (fn.__doc__ or "").strip()] for n, fn in PRESETS.items()]))
        print()
        print(
            format_table(
                ["attention", "what it does"],
                [[n, c.description] for n, c in VARIANTS.items()] + [["+fastrpb", "adds FastRPB's W V to any of them"]],
            )
        )
        print()
        print(
            format_table(
                ["protocol (txl eval --protocol)", "model", "settings"],
                [[p.name, p.description, p.settings()] for p in PROTOCOLS.values()],
            )
        )
    return 0
