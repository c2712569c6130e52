"""What every command shares: the command registry, one-line argparse errors, and the argument helpers.

Flags are turned into configs here; each command module under txl/cli/ declares its
own options and keeps its body to a few lines that call the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function as `txl NAME`; `add_args` declares its options."""

    def deco(run: Callable[[argparse.Namespace], int]):
        if name in COMMANDS:
            raise ValueError(f"command {name!r} is registered twice")
        COMMANDS[name] = (help, add_args, run)
        return run

    return deco


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def say(args: argparse.Namespace, text: str) -> None:
    """A line beside a command's table: on stdout, but on stderr when the table is printed as csv or latex (stdout
    then holds the table alone, ready to be redirected into a file)."""
    fmt = getattr(args, "format", "text")
    print(text, file=sys.stderr if fmt in ("csv", "latex") else sys.stdout)


class Once(argparse.Action):
    """A plan flag given once: a second value is refused in one line rather than silently replacing the first (a
    plan already says what each layer does; only --memory of txl eval takes several, to compare)."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest, None)
        if before is not None and before != values:
            parser.error(
                f"{option_string} given twice ({before!r} and {values!r}); give it once: one plan says what every "
                "layer does (e.g. 'A@first:2,B')"
            )
        setattr(namespace, self.dest, values)


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated whole numbers >= 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {text!r}")
    return values


def add_overrides(p, help: str = "e.g. model.layers.3.mem_len=512 (repeatable)") -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


# --------------------------------------------------------------------------- model flags


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (flags override --config; --set overrides both)")
    g.add_argument("--config", metavar="FILE", help="a JSON run or model config, or a run folder, to start from")
    g.add_argument("--layers", type=int, metavar="N", help="number of layers")
    g.add_argument("--d-model", type=int, metavar="D")
    g.add_argument("--n-head", type=int, metavar="H")
    g.add_argument("--d-head", type=int, metavar="DH", help="per-head width (default d_model / n_head)")
    g.add_argument("--d-inner", type=int, metavar="DI", help="feed-forward width (default 4 d_model)")
    g.add_argument("--vocab", type=int, metavar="V", help="vocabulary size")
    g.add_argument("--same-length", action="store_true", default=None, help="every query sees at most mem_len keys")
    add_plan_flags(g)
    add_overrides(g)


def add_plan_flags(g, attn: bool = True) -> None:
    """The per-layer plan flags beside --memory, one per registered dimension (txl.model.dimensions: range,
    attention variant where the model is built, memory dtype, sinks, compression, and any registered later), each
    given once: one plan says what every layer does."""
    from txl.model.dimensions import DIMENSIONS

    for name, dim in DIMENSIONS.items():
        if name == "memory" or not (attn or dim.at_eval):  # --memory is the command's own; a variant is built in
            continue
        g.add_argument(dim.option, dest=dim.flag, action=Once, metavar="PLAN", help=dim.help)


def typed_choices(name: str, *args):
    """An argparse type from a parser of txl.search.choices, by name (its ValueError: the flag's one-line error)."""

    def convert(text: str):
        from txl.core.errors import TxlError
        from txl.search import choices as plan_choices

        try:
            return getattr(plan_choices, name)(*args, text)
        except (ValueError, TxlError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def grid_args(g) -> None:
    """A flag per dimension a search may choose per layer (txl.model.dimensions: those with a grid flag)."""
    from txl.model.dimensions import searched

    for dim in searched().values():
        dest = dim.grid.replace("-", "_")
        kind = typed_choices("parse_choices", dim.grid)
        g.add_argument(
            f"--{dim.grid}", dest=dest, type=kind, metavar="LIST", help=f"per layer, e.g. {dim.grid_example}"
        )


# --------------------------------------------------------------------------- data flags


def add_data_args(p: argparse.ArgumentParser, corpus_positional: bool = True) -> None:
    if corpus_positional:
        p.add_argument(
            "corpus", nargs="?", default="pystdlib", help="a corpus name (txl data list) or a path (default pystdlib)"
        )
    g = p.add_argument_group("data")
    g.add_argument("--tokenizer", help="auto, bytes, chars, words, sentencepiece, or a sentencepiece .model file")
    g.add_argument("--vocab-size", type=int, help="sentencepiece pieces, or the most frequent words to keep")
    g.add_argument("--split", choices=["auto", "contiguous", "files"], help="how a local corpus is split")
    g.add_argument("--data-root", help="cache folder (default $TXL_DATA, else ./data/cache)")


# --------------------------------------------------------------------------- a whole run


def load_definitions() -> None:
    """Register every definition in `experiments/` (imported on use, so `txl --help` need not load torch)."""
    import experiments  # noqa: F401
