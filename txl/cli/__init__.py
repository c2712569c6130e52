"""The `txl` command: one small module per command or family, each a thin layer over the library.

Errors a user can fix print one line (`txl: error: ...`) and exit with status 2;
Ctrl-C exits with status 130 and leaves every file whole. A new command is a module
here whose body calls the library, registered with `txl.cli.args.command`,
imported below, and placed in FIRST where `txl --help` should list it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from txl.cli import (  # noqa: F401  (registers the commands)
    analyze,
    bench,
    budget,
    cluster,
    compare,
    data,
    evaluate,
    experiments,
    generate,
    interop,
    listing,
    plan,
    report,
    train,
)
from txl.cli.args import COMMANDS, Parser
from txl.core.errors import TxlError

FIRST = [
    "run",
    "status",
    "list",
    "report",
    "train",
    "eval",
    "compare",
    "analyze",
    "plan",
    "generate",
    "budget",
    "data",
    "import",
    "export",
    "bench",
]


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
    parser.commands = {}
    for name in sorted(COMMANDS, key=lambda n: FIRST.index(n) if n in FIRST else len(FIRST)):
        help, add_args, _ = COMMANDS[name]
        p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        add_args(p)
        parser.commands[name] = p
    return parser


def _parse(parser, argv: list[str]) -> argparse.Namespace:
    """parse_args, but a flag it does not know is named with the closest flags the command has."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        import difflib

        owner = parser.commands.get(args.command, parser)
        known = [o for o in owner._option_string_actions if o.startswith("--")]
        close = {m for e in extra if e.startswith("-") for m in difflib.get_close_matches(e.split("=")[0], known, n=2)}
        hint = f"; did you mean {' or '.join(sorted(close))}?" if close else ""
        owner.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def _load_torch() -> None:
    """Import torch with Ctrl-C held back (txl.core.signals.held_interrupts): a Ctrl-C inside its start-up could abort
    the process; one pressed meanwhile is delivered as soon as torch has loaded, as one line."""
    from txl.core.signals import held_interrupts

    with held_interrupts():
        import torch  # noqa: F401


def _messages() -> None:
    """The library's messages on stderr; under torchrun, rank 0's alone (errors aside)."""
    import logging

    _load_torch()
    from txl.core.distributed import launched
    from txl.core.log import setup

    setup(logging.INFO if launched().main else logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """txl's commands; a Ctrl-C wherever it lands (parsing, importing torch, running) is one line and 130."""
    name = "txl"
    try:
        parser = build_parser()
        argv = list(sys.argv[1:] if argv is None else argv)
        args = _parse(parser, argv)
        args.command_line = "txl " + " ".join(shlex.quote(a) for a in argv)  # what run folders record
        if not args.command:
            parser.print_help()
            return 0
        name = f"txl {args.command}"
        _messages()
        return _run(args)
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted; files written so far are whole", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    """A command's body, its errors each one line with the exit status they call for."""
    try:
        return COMMANDS[args.command][2](args) or 0
    except TxlError as e:
        print(f"txl {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return 0
    except OSError as e:  # a read-only folder, a path under a regular file, a full disk ...
        where = f": {e.filename}" if e.filename else ""
        print(f"txl {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except Exception as e:
        if disk_full(e):  # torch and safetensors report a full disk in their own exception types
            print(
                f"txl {args.command}: error: the disk is full ({type(e).__name__}); files written so far are whole "
                "(nothing half-written was kept): free space and run the command again",
                file=sys.stderr,
            )
            return 2
        if not out_of_memory(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(
            f"txl {args.command}: error: out of memory ({first[:200]}); use a smaller batch, segment, memory or model, "
            "or see what it needs with 'txl budget'",
            file=sys.stderr,
        )
        return 2


def disk_full(e: BaseException) -> bool:
    """Whether an exception is a write that found no space left (whatever library raised it)."""
    return getattr(e, "errno", None) == 28 or "no space left on device" in str(e).lower()


def out_of_memory(e: BaseException) -> bool:
    """Whether an exception is the allocator giving up (CPU or GPU)."""
    text = str(e).lower()
    return (
        isinstance(e, MemoryError)
        or type(e).__name__ == "OutOfMemoryError"
        or "can't allocate memory" in text
        or "out of memory" in text
    )
