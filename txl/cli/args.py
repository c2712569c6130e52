"""What every command shares: the command registry, one-line argparse errors, and the argument helpers.

Flags are turned into configs here; each command module under txl/cli/ declares its
own options and keeps its body to a few lines that call the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from txl.errors import TxlError

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
    g.add_argument(
        "--range",
        dest="attn_range",
        action=Once,
        metavar="PLAN",
        help="attention range per layer, e.g. 'range=128@first:12' (default unlimited)",
    )
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
    add_overrides(g)


COMPRESS_HELP = (
    "compressed memory per layer, LENGTH/RATE:FN (FN mean, max or conv), e.g. 'compress=16/4:mean@last:2,0' "
    "(default 0: none)"
)
SINKS_HELP = "attention sinks per layer: the stream's first N states kept for good, e.g. 'sinks=4@last:2,0' (default 0)"


def apply_model_flags(cfg, args: argparse.Namespace, memory: str | None, fresh_widths: bool):
    """The model flags of add_model_args applied to `cfg`; plans last. fresh_widths: d_inner follows d_model."""
    from txl.plans import apply_plans

    for flag, name in (("layers", "n_layer"), ("d_model", "d_model"), ("n_head", "n_head"), ("vocab", "vocab_size")):
        if getattr(args, flag, None) is not None:
            setattr(cfg, name, getattr(args, flag))
    if args.d_model is not None or args.n_head is not None or args.d_head is not None:
        if args.d_head is not None:
            cfg.d_head = args.d_head
        elif cfg.n_head >= 1:  # n_head < 1 is left for the config checks to name
            cfg.d_head = max(1, cfg.d_model // cfg.n_head)
    if args.d_inner is not None:
        cfg.d_inner = args.d_inner
    elif args.d_model is not None and fresh_widths:
        cfg.d_inner = 4 * args.d_model
    if args.same_length:
        cfg.same_length = True
    plans = {name: getattr(args, name, None) for name in ("attn_range", "attn", "memory_dtype", "sinks", "compress")}
    return apply_plans(cfg, memory=memory, **plans)


def config_file(path: str) -> str:
    """--config: a JSON file, or a run folder (its config.json)."""
    from pathlib import Path

    if Path(path).is_dir():
        if not (Path(path) / "config.json").is_file():
            raise TxlError(f"--config {path} is a folder without a config.json; give a run folder or a JSON file")
        return str(Path(path) / "config.json")
    return path


def model_config_from_args(args: argparse.Namespace, memory: str | None):
    """The model config a command's flags describe, checked."""
    from txl.config import RunConfig, apply_overrides, load_config
    from txl.plans import check_model

    run = load_config(config_file(args.config)) if args.config else RunConfig()
    run.model = apply_model_flags(run.model, args, memory, fresh_widths=not args.config)
    apply_overrides(run, args.overrides)
    return check_model(run.model)


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


def data_config_from_args(args: argparse.Namespace, base=None):
    from txl.config import DataConfig

    cfg = base or DataConfig()
    if getattr(args, "corpus", None):
        cfg.corpus = args.corpus
    for name, field_name in (
        ("tokenizer", "tokenizer"),
        ("vocab_size", "vocab_size"),
        ("split", "split"),
        ("data_root", "root"),
    ):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, field_name, value)
    return cfg.validate()


# --------------------------------------------------------------------------- a whole run


def run_config_from_args(args: argparse.Namespace, base=None):
    """Preset, --config or `base` (a RunConfig), then flags, then --set: the run a command describes, checked."""
    from txl.config import apply_overrides, load_config
    from txl.plans import check_run
    from txl.presets import get_preset

    if args.preset and args.config:
        raise TxlError("give --preset or --config, not both")
    if base is not None:
        run = base
    else:
        run = load_config(config_file(args.config)) if args.config else get_preset(args.preset or "small")
    run.model = apply_model_flags(run.model, args, args.memory, fresh_widths=False)
    for flag, section, name in (
        ("corpus", "data", "corpus"),
        ("tokenizer", "data", "tokenizer"),
        ("vocab_size", "data", "vocab_size"),
        ("steps", "train", "steps"),
        ("batch_size", "train", "batch_size"),
        ("tgt_len", "train", "tgt_len"),
        ("lr", "train", "lr"),
        ("device", "train", "device"),
    ):
        if getattr(args, flag, None) is not None:
            setattr(getattr(run, section), name, getattr(args, flag))
    apply_overrides(run, args.overrides)
    return check_run(run)


def load_definitions() -> None:
    """Register every definition in `experiments/` (imported on use, so `txl --help` need not load torch)."""
    import experiments  # noqa: F401
