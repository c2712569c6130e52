"""txl: Transformer-XL language models with per-layer memory plans."""

__version__ = "0.1.0"

from txl.errors import TxlError  # noqa: E402

__all__ = ["TxlError", "__version__", "console"]


def console() -> int:
    """The `txl` command (txl.cli.main); a Ctrl-C while the command line loads is one line and 130 too."""
    import sys

    try:
        from txl.cli import main
    except KeyboardInterrupt:
        print("\ntxl: interrupted", file=sys.stderr)
        return 130
    return main()
