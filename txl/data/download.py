"""Downloads with checksum verification: a file is kept only if its checksum matches."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from txl.core.errors import TxlError

CHUNK = 1 << 20


def file_digest(path: str | Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str | Path, checksum: str | None) -> bool:
    """True if `path` matches `checksum` ('md5:...', 'sha1:...' or 'sha256:...'; None accepts any file)."""
    if checksum is None:
        return True
    algorithm, _, expected = checksum.partition(":")
    return file_digest(path, algorithm) == expected.lower()


def download(urls: Sequence[str], dest: str | Path, checksum: str | None, progress: bool = True) -> Path:
    """Fetch the first URL that answers into `dest`, keeping it only if its checksum matches.

    A file already at `dest` with the right checksum is used as is (this is also
    how a file placed by hand is picked up). The download goes to a `.part` file
    that is removed on any failure, Ctrl-C included.
    """
    dest = Path(dest)
    if dest.exists():
        if verify(dest, checksum):
            return dest
        raise TxlError(f"{dest} does not match its checksum {checksum}: delete it and run again to download it afresh")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    try:
        for url in urls:
            try:
                _fetch(url, part, progress)
                break
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                part.unlink(missing_ok=True)
        else:
            raise TxlError(
                f"could not download {dest.name} ({'; '.join(errors)}); fetch {urls[0]} yourself, put it at {dest}, "
                "and run again"
            )
        if not verify(part, checksum):
            algorithm = checksum.partition(":")[0]
            got = file_digest(part, algorithm)
            raise TxlError(
                f"checksum mismatch for {dest.name}: expected {checksum}, got {algorithm}:{got}; "
                "the download was removed"
            )
        os.replace(part, dest)
        return dest
    finally:
        part.unlink(missing_ok=True)


def _fetch(url: str, part: Path, progress: bool) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "txl"})
    with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=total, unit="B", unit_scale=True, desc=part.name[: -len(".part")], file=sys.stderr, leave=False
            )
        try:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                if bar is not None:
                    bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()


def extract_member(
    archive: str | Path, member: str, dest: str | Path, checksum: str | None, size: int | None = None
) -> Path:
    """Extract one file from a zip archive, keeping it only if its size and checksum match."""
    dest = Path(dest)
    if dest.exists() and verify(dest, checksum) and (size is None or dest.stat().st_size == size):
        return dest
    part = dest.with_name(dest.name + ".part")
    try:
        try:
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        except (zipfile.BadZipFile, KeyError) as e:
            raise TxlError(f"{archive} is not the expected archive ({e}); delete it and run again") from None
        if (size is not None and part.stat().st_size != size) or not verify(part, checksum):
            raise TxlError(
                f"{member} in {archive} does not match its published checksum {checksum}; "
                "delete the archive and run again"
            )
        os.replace(part, dest)
        return dest
    finally:
        part.unlink(missing_ok=True)
