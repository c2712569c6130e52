"""Advisory locks on the folders a process writes: a second writer is refused and told who holds them.

A lock is `fcntl.flock` on a `.lock` file inside the folder. The operating system releases
it when the holding process ends, however it ends, so a crash or a kill never leaves a
folder locked; the file itself only records who held it last.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from txl.core.errors import TxlError


class LockedError(TxlError):
    """The folder is being written by another process."""


class FolderLock:
    """An exclusive lock on `folder`, taken on entry (or `acquire`), refused at once if another process holds it."""

    def __init__(self, folder: str | Path, wait: float = 0.0):
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self.wait = wait  # seconds to keep trying before refusing (short critical sections, like appending a row)
        self._file = None

    def acquire(self) -> FolderLock:
        if self._file is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                if self._current(f):
                    break
                f.close()  # the holder removed this lock file as we took it: take the one there now
                f = open(self.path, "a+")
                continue
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.close()
                    raise LockedError(
                        f"{self.folder} is in use by {describe_holder(self.path)}; wait for it to finish, or stop it"
                    ) from None
                time.sleep(0.05)
        f.seek(0)
        f.truncate()
        f.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": " ".join(shlex.quote(a) for a in sys.argv),
                }
            )
            + "\n"
        )
        f.flush()
        self._file = f
        return self

    def _current(self, f) -> bool:
        """Whether the locked file is still the one at self.path (not unlinked by its last holder)."""
        try:
            return os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            self.folder.mkdir(parents=True, exist_ok=True)
            return False

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def describe_holder(lock_file: Path) -> str:
    """'pid 123 on host (txl train ..., since ...)' from what the holder wrote, as far as it can be read."""
    try:
        info = json.loads(lock_file.read_text().strip() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('command', '?')[:80]}, since {info.get('since')})"
