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
    """The per-layer plan flags beside --memory (range, attention variant where the model is built, memory dtype,
    sinks, compression), each given once: one plan says what every layer does."""
    g.add_argument(
        "--range",
        dest="attn_range",
        action=Once,
        metavar="PLAN",
        help="attention range per layer, e.g. 'range=128@first:12' (default unlimited)",
    )
    if attn:
        g.add_argument(
            "--attn",
            action=Once,
            metavar="PLAN",
            help="attention variant per layer, e.g. 'attn=las@first:6,xl' (default xl)",
        )
    g.add_argument(
        "--memory-dtype",
        action=Once,
        metavar="PLAN",
        help="how each layer stores its memory: fp32 bf16 fp16 fp8 int8 int4, e.g. 'dtype=int8@first:4,fp32'",
    )
    g.add_argument("--sinks", action=Once, metavar="PLAN", help=SINKS_HELP)
    g.add_argument("--compress", action=Once, metavar="PLAN", help=COMPRESS_HELP)


COMPRESS_HELP = (
    "compressed memory per layer, LENGTH/RATE:FN (FN mean, max or conv), e.g. 'compress=16/4:mean@last:2,0' "
    "(default 0: none)"
)
SINKS_HELP = "attention sinks per layer: the stream's first N states kept for good, e.g. 'sinks=4@last:2,0' (default 0)"


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
