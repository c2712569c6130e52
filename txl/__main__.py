"""`python -m txl`, and the `txl` console script (setup.cfg names `console`)."""


def console() -> int:
    """The `txl` command (txl.cli.main); a Ctrl-C while the command line loads is one line and 130 too."""
    import sys

    try:
        from txl.cli import main
    except KeyboardInterrupt:
        print("\ntxl: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    raise SystemExit(console())
