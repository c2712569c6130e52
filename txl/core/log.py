"""Messages for people: one logger tree (`txl.*`) instead of callbacks, printed by the command line on stderr.

Library modules log through `logging.getLogger(__name__)`: what a sweep is doing (INFO), and
what it left out (WARNING). The library adds no handler; `txl` (the command line) calls `setup`,
which prints each message on stderr as written (warnings after "warning: "), beside the progress
bars. A program using txl as a library configures logging as it likes (tests read the messages
with pytest's caplog).
"""

from __future__ import annotations

import logging
import sys

ROOT = "txl"


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever sys.stderr is when a message comes (a test may have replaced it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler sets it once; the property looks it up every time
        pass


class _Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"warning: {text}" if record.levelno == logging.WARNING else text


def setup(level: int = logging.INFO) -> None:
    """Print txl's messages of `level` and above on stderr, one line each (once, however often it is called)."""
    logger = logging.getLogger(ROOT)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(_Plain())
        logger.addHandler(handler)  # it counts as a handler, so Python's last-resort one stays silent
    logger.setLevel(level)
