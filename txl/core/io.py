"""Crash-safe file writing: every file txl writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from txl.core.errors import TxlError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: temporary files start at 0600, which colleagues cannot read


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, ".*.tmp-*")  # left by any writer in this folder that was killed, whatever it wrote
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp-{owner_tag()}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        # On any failure (Ctrl-C included) the old file stays and the partial one goes.
        tmp_path.unlink(missing_ok=True)


def pyplot():
    """matplotlib's pyplot on the headless Agg backend: figures are written to files, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, *paths: str | os.PathLike) -> None:
    """Write a matplotlib figure to each path (its format from the suffix), atomically, then close it."""
    import matplotlib.pyplot as plt

    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."), dpi=120)
    plt.close(fig)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line and flush it to disk, so a crash leaves whole lines only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    _drop_torn_tail(path)
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left without its newline, so the next append starts clean."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        content = f.read()
        f.truncate(content.rfind(b"\n") + 1)


def owner_tag(pid: int | None = None) -> str:
    """HOST.PID: what a temporary file's name ends in, so that its writer can be told alive or gone."""
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
    return f"{host}.{os.getpid() if pid is None else pid}"


def remove_stale(folder: str | os.PathLike, pattern: str) -> list[Path]:
    """Remove what processes that no longer run left behind: entries matching `pattern` whose name ends in -HOST.PID.

    Temporary files and folders are named after the process writing them; one of this host
    whose process is gone was cut short (a kill, a crash) and is safe to remove. Another
    host's (a shared file system) are left alone: whether that process lives cannot be seen.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    here = owner_tag().rpartition(".")[0]
    for entry in folder.glob(pattern):
        host, _, pid = entry.name.rpartition("-")[2].rpartition(".")
        if host == here and pid.isdigit() and not _alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def read_jsonl(
    path: str | os.PathLike, on_bad: Callable[[int, str], None] | None = None, numbered: bool = False
) -> list:
    """Read a JSON-lines file of objects, skipping a torn last line left by a crash.

    A damaged line elsewhere (not JSON, or not an object) is passed to `on_bad(line number,
    why)` and skipped; without `on_bad` it is an error naming the file and the line. With
    `numbered`, each row comes as (line number, row).
    """
    path = Path(path)
    if not path.exists():
        return []
    rows, lines_of = [], []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # a write cut short by a crash; the rows before it are whole
            row, why = None, "is not JSON"
        else:
            why = None if isinstance(row, dict) else "is not a JSON object"
        if why is None:
            rows.append(row)
            lines_of.append(i + 1)
        elif on_bad is not None:
            on_bad(i + 1, why)
        else:
            raise TxlError(f"{path} line {i + 1} {why}; remove or mend that line")
    return list(zip(lines_of, rows)) if numbered else rows


def shown(path: str | os.PathLike) -> str:
    """A path as a figure or its title shows it: relative to the working folder when inside it, else its last two
    parts, so a figure someone shares carries no absolute local path."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(Path(*p.parts[-2:]))
