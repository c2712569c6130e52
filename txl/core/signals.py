"""Ctrl-C and SIGTERM as requests: long work stops at the next safe point, not wherever the signal lands.

While a `StopRequests` block is active, the first SIGINT or SIGTERM only sets a flag
that the loop reads between steps, so a checkpoint always holds the state after a whole
step. A second signal raises KeyboardInterrupt at once; what is on disk then is the last
whole checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class StopRequests:
    """A context in which SIGINT and SIGTERM request a stop instead of interrupting."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    GRACE = 1.0  # seconds: a repeat within this is the same request (torchrun forwards a Ctrl-C to workers that saw it)

    def __init__(self, message: str = "stopping after this step (signal again to stop at once)"):
        self.message = message
        self.signal: int | None = None
        self._first = 0.0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            if time.monotonic() - self._first < self.GRACE:
                return
            raise KeyboardInterrupt
        self.signal, self._first = signum, time.monotonic()
        print(f"\n{signal.Signals(signum).name}: {self.message}", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False


@contextmanager
def held_interrupts() -> Iterator[None]:
    """Hold Ctrl-C back while code runs that cannot take a KeyboardInterrupt: torch's C++ importing Python (torch
    itself, and torch._dynamo, which creating an optimizer imports), where one aborts the process. A Ctrl-C pressed
    meanwhile is delivered as the block ends, and is then the usual one line."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
