"""The one exception type users see: a one-line message naming the problem and what to do."""


class TxlError(Exception):
    """A user-facing error; the CLI prints its message on one line and exits with status 2."""

    exit_code = 2
