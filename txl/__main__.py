"""`python -m txl`, and the `txl` console script (setup.cfg names `console`)."""


def console() -> int:
    """The `txl` command (txl.cli.main); a Ctrl-C while the command line loads is one line and 130 too, and one
    that lands once the command has ended (while Python shuts down) is ignored: its files are whole."""
    import signal
    import sys

    try:
        from txl.cli import main

        code = main()
    except KeyboardInterrupt:
        print("\ntxl: interrupted", file=sys.stderr)
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == 130:  # interrupted: said, and every file whole; Python's own shutdown would end it by SIGINT
        import os  # (-2, not 130) when the Ctrl-C cut into an import, so the status is given here

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return code


if __name__ == "__main__":
    raise SystemExit(console())
