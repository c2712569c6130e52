"""What a user's text is, by its bytes: a content hash of a local corpus (a file, or a folder's files with their
names), so that an edited file is a new corpus for results, run folders and skip decisions, never the old one.

Hashing a large corpus is paid once: the hash is kept beside the corpus's token caches with each file's size and
modification time, and read back while none of them changed. A registered corpus has no content hash here: it is
downloaded against a checksum, or generated from its settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from txl.config import DataConfig
from txl.core.io import atomic_write_json
from txl.data.corpora import cache_root, corpus_spec

CHUNK = 1 << 20


def local_folder(root: Path, path: Path) -> Path:
    """Where a local corpus's token caches (and its content hash) live under the data root."""
    return root / f"local-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}-{path.name}"


def _files(path: Path) -> list[tuple[str, Path]]:
    """A file alone, or a folder's files (hidden ones left out, as the corpus reader does), by relative name."""
    if path.is_file():
        return [(path.name, path)]
    found = []
    for folder, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [(os.path.relpath(os.path.join(folder, n), path), Path(folder) / n) for n in names]
    return sorted((rel, p) for rel, p in found if not Path(rel).name.startswith("."))


def content_hash(cfg: DataConfig) -> str | None:
    """A sha256 (16 hex digits) of a local corpus's bytes and file names; None for a registered corpus, or a path
    that does not exist (the corpus reader names that problem)."""
    if corpus_spec(cfg.corpus) is not None:
        return None
    try:
        path = Path(cfg.corpus).expanduser().resolve()
        if not (path.is_file() or path.is_dir()):
            return None
        files = _files(path)
        stats = [[rel, p.stat().st_size, p.stat().st_mtime_ns] for rel, p in files]
    except (OSError, RuntimeError):
        return None
    memo = local_folder(cache_root(cfg), path) / "content.json"
    try:
        kept = json.loads(memo.read_text())
        if kept.get("files") == stats and isinstance(kept.get("sha256"), str):
            return kept["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256()
    for rel, p in files:
        digest.update(rel.encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
        digest.update(b"\0")
    text = digest.hexdigest()[:16]
    try:
        atomic_write_json(memo, {"files": stats, "sha256": text})
    except OSError:  # a read-only data root: hashed again next time
        pass
    return text
