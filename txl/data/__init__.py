"""Text to segments: corpora, tokenizers, the on-disk token cache, and segment streams.

    corpus = load_corpus(DataConfig(corpus="pystdlib"))
    stream = corpus.stream("train", batch=22, tgt_len=512)

Token ids are cached as .npy files (memory-mapped on load, in the smallest integer
type that fits) under a key made of the raw splits' content hash and the tokenizer's
settings, so a changed source or tokenizer builds a new cache. A cache folder is
built under a temporary name and renamed into place, so it is whole or absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from txl.config import DataConfig, SyntheticConfig
from txl.core.errors import TxlError
from txl.core.io import atomic_write_json, owner_tag, remove_stale
from txl.core.table import format_table
from txl.data import synthetic
from txl.data.content import content_hash, local_folder
from txl.data.corpora import CORPORA, SPLITS, RawCorpus, cache_root, corpus_spec, fetch_local
from txl.data.streams import Segment, SegmentStream
from txl.data.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
    smallest_dtype,
)

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the cache layout or a tokenizer's output changes (2: arrays carry checksums)


@dataclass
class Corpus:
    """Token ids of each split, the tokenizer that made them, and what they came from."""

    name: str
    tokenizer: Tokenizer
    splits: dict[str, np.ndarray]
    raw_bytes: dict[str, int]
    masks: dict[str, np.ndarray] | None = None  # synthetic tasks: which targets are scored
    files: dict[str, int] = field(default_factory=dict)
    source: str = ""
    cache_dir: Path | None = None
    task: str | None = None  # the synthetic task, if any
    synthetic: SyntheticConfig | None = None
    unknown: dict[str, int] = field(default_factory=dict)  # tokens per split the tokenizer mapped to its unknown symbol
    content: str | None = None  # a local corpus's content hash (txl.data.content); None for a registered one

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def unit(self) -> str:
        return self.tokenizer.unit

    def stream(self, split: str, batch: int, tgt_len: int, **kwargs) -> SegmentStream:
        mask = self.masks[split] if self.masks is not None else None
        return SegmentStream(self.splits[split], batch, tgt_len, mask=mask, **kwargs)

    def with_whole(self) -> Corpus:
        """This corpus with one more split, `whole`: train, valid and test in order (for a file split contiguously,
        the whole file), for scoring a text that is not a split of its own (txl eval --corpus)."""
        order = [s for s in ("train", "valid", "test") if s in self.splits]
        extra = {"whole": np.concatenate([np.asarray(self.splits[s]) for s in order])}
        masks = None if self.masks is None else {**self.masks, "whole": np.concatenate([self.masks[s] for s in order])}
        return dataclasses.replace(
            self,
            splits={**self.splits, **extra},
            raw_bytes={**self.raw_bytes, "whole": sum(self.raw_bytes[s] for s in order)},
            masks=masks,
            files={**self.files, "whole": sum(self.files.get(s, 0) for s in order)} if self.files else self.files,
            unknown={**self.unknown, "whole": sum(self.unknown.get(s, 0) for s in order)} if self.unknown else {},
        )

    def bytes_per_token(self, split: str) -> float:
        return self.raw_bytes[split] / max(1, len(self.splits[split]))

    def identity(self) -> dict:
        """What a result was measured on: corpus, source, tokenizer, tokens per split, and the cache key
        (a hash of the raw splits and the tokenizer settings) where there is one."""
        return {
            "corpus": self.name,
            "source": self.source,
            "tokenizer": self.tokenizer.kind,
            "vocab_size": self.vocab_size,
            "tokens": {s: int(len(ids)) for s, ids in self.splits.items()},
            "key": self.cache_dir.name if self.cache_dir is not None else None,
            **({"content": self.content} if self.content else {}),
        }

    def stats_table(self) -> str:
        """Per split: files, bytes, tokens, bytes per token (and scored answers of a synthetic task)."""
        rows = []
        for split, ids in self.splits.items():
            row = [split, self.files.get(split), self.raw_bytes[split], len(ids), self.bytes_per_token(split)]
            if self.masks is not None:
                row.append(int(self.masks[split].sum()))
            rows.append(row)
        headers = ["split", "files", "bytes", f"tokens ({self.unit}s)", "bytes/token"]
        if self.masks is not None:
            headers.append("scored answers")
        return format_table(headers, rows)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_tokenizer(cfg: DataConfig) -> str:
    spec = corpus_spec(cfg.corpus)
    if cfg.tokenizer == "auto":
        return spec.tokenizer if spec else "bytes"
    if spec and spec.fetch is None:
        raise TxlError(f"corpus {cfg.corpus!r} is a synthetic task with its own vocabulary; leave data.tokenizer=auto")
    kind = cfg.tokenizer
    if kind.endswith((".model", ".json", ".txt")):
        if not Path(kind).is_file():
            raise TxlError(
                f"tokenizer file {kind} " + ("is not a regular file" if Path(kind).exists() else "does not exist")
            )
        return kind
    if kind not in ("bytes", "chars", "words", "sentencepiece"):
        raise TxlError(
            f"unknown tokenizer {kind!r} (use auto, bytes, chars, words, sentencepiece, or a path: a sentencepiece "
            ".model, a txl vocab.json, or a word list .txt)"
        )
    if kind == "sentencepiece" and cfg.vocab_size is None:
        raise TxlError("tokenizer sentencepiece needs a vocabulary size: set data.vocab_size (e.g. 8000)")
    return kind


SMALL_SPLIT = 1000  # bytes: a valid or test split smaller than this scores too few tokens to say much


def notice_oddities(raw: RawCorpus, tokenizer: str) -> None:
    """Say what a user's text does that they may not expect: a split too small to score, bytes that are not UTF-8
    (a text tokenizer reads each as U+FFFD), how a folder was split by file."""
    small = {s: len(raw.splits[s]) for s in ("valid", "test") if len(raw.splits[s]) < SMALL_SPLIT}
    if small:
        sizes = ", ".join(f"{s} {n:,} bytes" for s, n in small.items())
        log.warning(f"corpus {raw.name} is small ({sizes}): a score over so few tokens says little; give more text")
    if tokenizer in ("chars", "words", "sentencepiece") or tokenizer.endswith((".json", ".txt", ".model")):
        bad = sum(len(d) - len(d.decode("utf-8", "ignore").encode("utf-8")) for d in raw.splits.values())
        if bad:
            log.warning(
                f"{bad:,} bytes of {raw.name} are not UTF-8; the {Path(tokenizer).name} tokenizer reads each as U+FFFD"
            )
    if raw.by_file:
        counts = ", ".join(f"{raw.files.get(s, 0)} {s}" for s in SPLITS)
        log.info(f"folder {raw.source} split by file: {counts} (name files train, valid and test to choose)")


def load_corpus(cfg: DataConfig, progress: bool = True, verify: bool = False) -> Corpus:
    """Fetch (if needed), tokenize (if not cached) and memory-map a corpus's splits.

    An existing cache is checked before use: cheaply (its files and their lengths) always,
    and in full (each array's checksum and its largest id) with `verify`; a damaged cache
    is rebuilt.
    """
    cfg.validate()
    spec = corpus_spec(cfg.corpus)
    kind = resolve_tokenizer(cfg)
    if spec is not None and spec.fetch is None:
        return _limit(_synthetic(cfg), cfg)
    root = cache_root(cfg)
    if spec is not None:
        raw = spec.fetch(root, cfg)
        folder = root / spec.name
    else:
        try:
            path = Path(cfg.corpus).expanduser().resolve()
        except (RuntimeError, OSError) as e:  # a symlink loop
            raise TxlError(f"corpus {cfg.corpus!r} cannot be followed to a file or folder ({e})") from None
        raw = fetch_local(path, cfg)
        folder = local_folder(root, path)
    for s in SPLITS:
        if not raw.splits[s]:
            raise TxlError(f"corpus {cfg.corpus!r} has an empty {s} split; give it more text or another data.split")
    hashes = {s: _sha256(raw.splits[s]) for s in SPLITS}
    settings = {
        "version": CACHE_VERSION,
        "tokenizer": kind,
        "vocab_size": cfg.vocab_size if kind in ("words", "sentencepiece") else None,
        "min_freq": cfg.min_freq if kind == "words" else None,
        "sp_model_type": cfg.sp_model_type if kind == "sentencepiece" else None,
        "model_sha256": _sha256(Path(kind).read_bytes()) if Path(kind).suffix in (".model", ".json", ".txt") else None,
        "sources": hashes,
    }
    key = _sha256(json.dumps(settings, sort_keys=True).encode())[:16]
    cache = folder / f"tokens-{Path(kind).stem if Path(kind).suffix else kind}-{key}"
    remove_stale(folder, "tokens-*.tmp-*")  # builds that a dead process left unfinished
    if cache.exists():
        problem = cache_problem(cache, full=verify)
        if problem is not None:
            aside = cache.with_name(f"{cache.name}.damaged-{owner_tag()}")
            try:  # one process wins; the others find it gone and rebuild or reuse the rebuilt one
                os.rename(cache, aside)
            except OSError as e:
                if cache.exists() and cache_problem(cache, full=verify) is not None:  # not a race: still damaged
                    raise TxlError(
                        f"token cache {cache} is damaged ({problem}) and cannot be set aside ({e.strerror}); "
                        "make its folder writable, remove it, or set data.root to a folder txl may write"
                    ) from None
            else:  # said only once the damaged cache is out of the way, so a read-only root gets its one line
                _say(True, f"token cache {cache} is damaged ({problem}); rebuilding it")
            shutil.rmtree(aside, ignore_errors=True)
    if not cache.exists():
        if spec is None:  # a user's own text: what it does that they may not expect, once, as it is tokenized
            notice_oddities(raw, kind)
        _build_cache(raw, kind, cfg, folder, cache, settings, progress)
    content = None if spec is not None else content_hash(cfg)  # a user's text: its bytes say what it is
    return _limit(dataclasses.replace(_open_cache(cache), content=content), cfg)


def cache_problem(cache: Path, full: bool = False) -> str | None:
    """What is wrong with a token cache folder, or None. Cheap checks always; checksums and ids with `full`."""
    try:
        meta = json.loads((cache / "meta.json").read_text())
        counts, sums, vocab = meta["tokens"], meta["sha256"], meta["vocab_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return "meta.json is missing or unreadable"
    if not (cache / "vocab.json").is_file():
        return "vocab.json is missing"
    try:
        symbols = load_tokenizer(cache / "vocab.json").vocab_size
    except TxlError as e:
        return f"vocab.json cannot be read ({e})"
    if symbols != vocab:
        return f"vocab.json holds {symbols} symbols, meta.json says {vocab}"
    for s in SPLITS:
        path = cache / f"{s}.npy"
        try:
            ids = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return f"{path.name} is missing or unreadable"
        if len(ids) != counts.get(s):
            return f"{path.name} holds {len(ids)} tokens, meta.json says {counts.get(s)}"
        if full:
            if _sha256(path.read_bytes()) != sums.get(s):
                return f"{path.name} has changed since it was written (checksum)"
            if len(ids) and int(ids.max()) >= vocab:
                return f"{path.name} holds ids beyond the vocabulary of {vocab}"
    return None


def _make_tokenizer(raw: RawCorpus, kind: str, cfg: DataConfig, folder: Path, progress: bool) -> Tokenizer:
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "chars":
        # the symbol inventory of all splits, as the original; on a user's text also U+FFFD, what other text's
        # characters it lacks are read as (a registered corpus such as text8 keeps its published inventory)
        return CharTokenizer.build(raw.splits.values(), unknown=corpus_spec(cfg.corpus) is None)
    if kind == "words":
        return WordTokenizer.build(raw.splits["train"], min_freq=cfg.min_freq, max_size=cfg.vocab_size)
    if kind.endswith(".model"):
        return SentencePieceTokenizer(kind)
    if kind.endswith(".json"):
        return load_tokenizer(kind)
    if kind.endswith(".txt"):
        return WordTokenizer.from_list(Path(kind))
    model = folder / f"sp-{cfg.sp_model_type}-{cfg.vocab_size}-{_sha256(raw.splits['train'])[:12]}.model"
    if model.exists():
        return SentencePieceTokenizer(model)
    _say(
        progress, f"training a {cfg.sp_model_type} sentencepiece model of {cfg.vocab_size} pieces on the training split"
    )
    return SentencePieceTokenizer.train(raw.splits["train"], model, cfg.vocab_size, cfg.sp_model_type)


def _build_cache(
    raw: RawCorpus, kind: str, cfg: DataConfig, folder: Path, cache: Path, settings: dict, progress: bool
) -> None:
    start = time.time()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _make_tokenizer(raw, kind, cfg, folder, progress)
    tmp = cache.with_name(f"{cache.name}.tmp-{owner_tag()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        counts, sums, unknown = {}, {}, {}
        for s in SPLITS:
            _say(progress, f"tokenizing {raw.name} {s} ({len(raw.splits[s]) / 1e6:.1f} MB, {tokenizer.kind})")
            ids = tokenizer.encode(raw.splits[s]).astype(smallest_dtype(tokenizer.vocab_size), copy=False)
            np.save(tmp / f"{s}.npy", ids)
            counts[s] = int(len(ids))
            if tokenizer.unk_id is not None:
                unknown[s] = int((ids == tokenizer.unk_id).sum())
            sums[s] = _sha256((tmp / f"{s}.npy").read_bytes())
        if isinstance(tokenizer, SentencePieceTokenizer):
            shutil.copyfile(tokenizer.model_path, tmp / "sp.model")
            atomic_write_json(tmp / "vocab.json", {**tokenizer.to_json(), "model_file": "sp.model"})
        else:
            tokenizer.save(tmp / "vocab.json")
        atomic_write_json(
            tmp / "meta.json",
            {
                **settings,
                "corpus": raw.name,
                "source": raw.source,
                "tokens": counts,
                "sha256": sums,
                "unknown": unknown,  # of each .npy file, checked by `txl data verify` and before training
                "raw_bytes": {s: len(raw.splits[s]) for s in SPLITS},
                "files": raw.files,
                "vocab_size": tokenizer.vocab_size,
                "build_seconds": round(time.time() - start, 2),
            },
        )
        try:
            os.rename(tmp, cache)
        except OSError:
            if not (cache / "meta.json").exists():  # another process won the race with the same content
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _say(progress, f"token cache written to {cache} in {time.time() - start:.1f} s")


def _open_cache(cache: Path) -> Corpus:
    meta = json.loads((cache / "meta.json").read_text())
    tokenizer = load_tokenizer(cache / "vocab.json")
    splits = {s: np.load(cache / f"{s}.npy", mmap_mode="r") for s in SPLITS}
    return Corpus(
        name=meta["corpus"],
        tokenizer=tokenizer,
        splits=splits,
        raw_bytes=meta["raw_bytes"],
        files=meta.get("files", {}),
        source=meta.get("source", ""),
        cache_dir=cache,
        unknown=meta.get("unknown", {}),
    )


def _synthetic(cfg: DataConfig) -> Corpus:
    task, syn = cfg.corpus, cfg.synthetic
    seeds = {"train": syn.seed, "valid": syn.seed + 1, "test": syn.seed + 2}
    sizes = {"train": syn.train_tokens, "valid": syn.eval_tokens, "test": syn.eval_tokens}
    splits, masks = {}, {}
    for s in SPLITS:
        splits[s], masks[s] = synthetic.generate(task, syn, sizes[s], seeds[s])
    return Corpus(
        name=task,
        tokenizer=synthetic.SyntheticTokenizer(synthetic.vocabulary(task, syn)),
        splits=splits,
        raw_bytes={s: len(splits[s]) for s in SPLITS},
        masks=masks,
        source=f"generated (seed {syn.seed})",
        task=task,
        synthetic=syn,
    )


def _limit(corpus: Corpus, cfg: DataConfig) -> Corpus:
    """Keep the first data.max_tokens training tokens (a tenth of that for validation and test)."""
    if cfg.max_tokens is None:
        return corpus
    limits = {"train": cfg.max_tokens, "valid": max(cfg.max_tokens // 10, 2), "test": max(cfg.max_tokens // 10, 2)}
    for s, n in limits.items():
        kept = min(n, len(corpus.splits[s]))
        corpus.raw_bytes[s] = int(round(corpus.bytes_per_token(s) * kept))
        corpus.splits[s] = corpus.splits[s][:kept]
        if corpus.masks is not None:
            corpus.masks[s] = corpus.masks[s][:kept]
    return corpus


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"txl data: {message}", file=sys.stderr, flush=True)


def corpus_names() -> list[str]:
    return list(CORPORA)


__all__ = ["Corpus", "Segment", "SegmentStream", "load_corpus", "corpus_names", "CORPORA"]
