"""Tokenizers, corpora, the token cache, downloads and segment streams."""

import functools
import hashlib
import http.server
import json
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from txl.cli import main
from txl.config import DataConfig, SyntheticConfig
from txl.core.errors import TxlError
from txl.data import load_corpus, synthetic
from txl.data.corpora import assign_files, split_contiguous
from txl.data.download import download, extract_member
from txl.data.streams import SegmentStream
from txl.data.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    SentencePieceTokenizer,
    WordTokenizer,
    load_tokenizer,
    smallest_dtype,
)

SAMPLE = (
    "def f(x):\n    return x  +  1\t# tab\n\n"
    "Naïve café, ünïcödé — “quotes” and emoji 🙂.\n"
    "   leading spaces and trailing   \n" * 3
).encode()


@pytest.fixture(scope="module")
def sp_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sp")
    text = SAMPLE * 20 + open(__file__, "rb").read()
    return {
        kind: SentencePieceTokenizer.train(text, folder / f"{kind}.model", 400, kind) for kind in ("unigram", "bpe")
    }


def test_bytes_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode(SAMPLE)
    assert ids.dtype == np.uint8 and len(ids) == len(SAMPLE)
    assert tok.decode(ids) == SAMPLE.decode()


def test_chars_round_trip():
    tok = CharTokenizer.build([SAMPLE], unknown=False)  # a registered corpus's inventory: its characters alone
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE.decode()
    assert tok.vocab_size == len(set(SAMPLE.decode()))
    with pytest.raises(TxlError, match="'Z' is not in this character vocabulary"):
        tok.encode(b"Z")


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_sentencepiece_round_trip(sp_models, kind):
    tok = sp_models[kind]
    ids = tok.encode(SAMPLE)
    assert len(ids) < len(SAMPLE)  # it learned pieces longer than a byte
    assert tok.decode(ids) == SAMPLE.decode()


def test_sentencepiece_too_small_is_a_clear_error(tmp_path):
    with pytest.raises(TxlError, match="vocabulary size 260 is too small.*raise data.vocab_size"):
        SentencePieceTokenizer.train(SAMPLE, tmp_path / "x.model", 260)
    assert not (tmp_path / "x.model").exists()


def test_words_unk_eos_and_frequency_order():
    tok = WordTokenizer.build(b"the cat the dog\nthe cat\nrare\n", min_freq=2)
    assert tok.symbols == ["<eos>", "<unk>", "the", "cat"]
    ids = tok.encode(b"the zebra cat\n")
    assert [tok.symbols[i] for i in ids] == ["the", "<unk>", "cat", "<eos>"]
    assert tok.decode(tok.encode(b"the cat\nthe\n")) == "the cat\nthe\n"
    assert WordTokenizer.build(b"a a b c\n", max_size=3).symbols == ["<eos>", "<unk>", "a"]


def test_vocabularies_are_json_and_reload(tmp_path, sp_models):
    for tok in (ByteTokenizer(), CharTokenizer.build([SAMPLE]), WordTokenizer.build(SAMPLE)):
        tok.save(tmp_path / "v.json")
        assert json.loads((tmp_path / "v.json").read_text())["kind"] == tok.kind
        back = load_tokenizer(tmp_path / "v.json")
        assert back.fingerprint == tok.fingerprint
        assert np.array_equal(back.encode(SAMPLE), tok.encode(SAMPLE))
    sp = load_tokenizer(sp_models["unigram"].model_path)
    assert sp.decode(sp.encode(SAMPLE)) == SAMPLE.decode()


def test_smallest_dtype():
    assert smallest_dtype(256) == np.uint8 and smallest_dtype(257) == np.uint16
    assert smallest_dtype(65536) == np.uint16 and smallest_dtype(65537) == np.uint32


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize("n, batch, tgt", [(1000, 4, 7), (1000, 3, 50), (103, 2, 10), (64, 1, 100)])
def test_stream_yields_every_token_once_in_order(n, batch, tgt):
    tokens = np.arange(n) % 251
    stream = SegmentStream(tokens.astype(np.uint8), batch, tgt)
    seen_inputs, seen_targets = [], []
    for seg in stream.epoch(0):
        assert seg.inputs.shape == seg.targets.shape and seg.inputs.shape[1] <= tgt
        seen_inputs.append(seg.inputs.numpy())
        seen_targets.append(seg.targets.numpy())
    inputs, targets = np.concatenate(seen_inputs, 1), np.concatenate(seen_targets, 1)
    streams = tokens[: stream.stream_len * batch].reshape(batch, -1)
    assert np.array_equal(inputs, streams[:, :-1])  # each stream in order, each token once
    assert np.array_equal(targets, streams[:, 1:])  # targets are inputs shifted by one, across segment boundaries
    assert inputs.size == stream.tokens_per_epoch and len(stream) == len(seen_inputs)


def test_stream_ranks_partition_the_global_batch():
    tokens = np.arange(4000).astype(np.int64)
    whole = [s.inputs for s in SegmentStream(tokens, 6, 16).epoch(0)]
    parts = [[s.inputs for s in SegmentStream(tokens, 2, 16, rank=r, world=3).epoch(0)] for r in range(3)]
    for i, seg in enumerate(whole):
        assert np.array_equal(seg.numpy(), np.concatenate([p[i].numpy() for p in parts]))


def test_stream_resumes_mid_epoch_and_shuffles_offsets():
    tokens = np.arange(5000).astype(np.int64)
    stream = SegmentStream(tokens, 4, 32, shuffle=True, seed=3)
    full = list(stream.epoch(1))
    resumed = list(stream.epoch(1, start_index=5))
    assert all(np.array_equal(a.inputs, b.inputs) for a, b in zip(full[5:], resumed))
    assert stream.offset(1) != stream.offset(2)
    firsts = {int(next(stream.epoch(e)).inputs[0, 0]) for e in range(4)}
    assert len(firsts) > 1  # different epochs start the streams at different places
    covered = np.concatenate([s.inputs.numpy().ravel() for s in stream.epoch(2)])
    assert len(np.unique(covered)) == len(covered)  # still each token at most once


def test_stream_masks_follow_targets():
    tokens, mask = synthetic.generate("copy", SyntheticConfig(lags=[5]), 2000, 0)
    for seg in SegmentStream(tokens, 2, 50, mask=mask).epoch(0):
        scored = seg.targets[seg.mask]
        assert len(scored) and (scored < 16).all()  # answers are data symbols
        queries = seg.inputs[seg.mask]
        assert (queries == 16).all()  # every scored target follows a query token


# --------------------------------------------------------------------------- synthetic tasks


def test_synthetic_tasks_follow_their_rules():
    cfg = SyntheticConfig(lags=[3, 7], symbols=10)
    tokens, mask = synthetic.generate("copy", cfg, 3000, 1)
    value = np.where(tokens < 10, tokens, 0).astype(int)
    answers = np.flatnonzero(mask)
    assert len(answers) > 100
    for a in answers:
        assert tokens[a - 1] == 10 and tokens[a] == (value[a - 3] + value[a - 7]) % 10
    tokens, mask = synthetic.generate("pointer", cfg, 3000, 1)
    value = np.where(tokens < 10, tokens, 0)
    for a in np.flatnonzero(mask):
        lag = cfg.lags[tokens[a - 1] - 10]
        assert tokens[a] == value[a - lag]
    tokens, mask = synthetic.generate("decay", cfg, 3000, 1)
    assert set(np.unique(tokens[mask])) == {11, 12}  # both signs occur
    again, _ = synthetic.generate("decay", cfg, 3000, 1)
    assert np.array_equal(tokens, again)
    assert synthetic.required_reach(cfg) == 6


def test_synthetic_corpus_loads_with_masks():
    corpus = load_corpus(
        DataConfig(corpus="pointer", synthetic=SyntheticConfig(lags=[4, 9], train_tokens=5000, eval_tokens=1000))
    )
    assert corpus.vocab_size == 16 + 2 and corpus.masks["valid"].shape == corpus.splits["valid"].shape
    assert not np.array_equal(corpus.splits["valid"], corpus.splits["test"])


# --------------------------------------------------------------------------- corpora and the cache


def test_contiguous_split_cuts_at_newlines():
    data = b"".join(b"line %03d\n" % i for i in range(200))
    parts = split_contiguous(data)
    assert b"".join(parts.values()) == data
    assert all(p.endswith(b"\n") for p in parts.values())
    assert 0.88 < len(parts["train"]) / len(data) < 0.92


def test_file_assignment_is_stable_and_fills_every_split():
    names = [f"pkg/mod{i}.py" for i in range(400)]
    groups = assign_files(names)
    assert sorted(sum(groups.values(), [])) == sorted(names)
    assert 320 < len(groups["train"]) < 390
    more = assign_files(names + ["pkg/new.py"])
    assert all(set(groups[s]) <= set(more[s]) for s in groups)  # adding a file moves no other file
    small = assign_files(["a", "b", "c", "d"])
    assert all(small.values())


def test_pystdlib_is_split_by_file_and_cached(tmp_path):
    cfg = DataConfig(root=str(tmp_path))
    corpus = load_corpus(cfg, progress=False)
    assert corpus.vocab_size == 256 and corpus.splits["train"].dtype == np.uint8
    assert all(corpus.files[s] > 0 for s in ("train", "valid", "test"))
    assert len(corpus.splits["train"]) > 10 * len(corpus.splits["valid"])
    stamp = (corpus.cache_dir / "train.npy").stat().st_mtime_ns
    again = load_corpus(cfg, progress=False)
    assert again.cache_dir == corpus.cache_dir and (again.cache_dir / "train.npy").stat().st_mtime_ns == stamp
    assert isinstance(again.splits["train"], np.memmap)


def _folder_corpus(tmp_path):
    folder = tmp_path / "text"
    folder.mkdir()
    for i in range(60):
        (folder / f"doc{i}.txt").write_text(f"document {i}\n" + "words and more words\n" * (i + 1))
    return folder


def test_cache_is_rebuilt_when_source_or_tokenizer_changes(tmp_path):
    folder = _folder_corpus(tmp_path)
    cfg = DataConfig(corpus=str(folder), root=str(tmp_path / "cache"))
    first = load_corpus(cfg, progress=False)
    assert load_corpus(cfg, progress=False).cache_dir == first.cache_dir
    words = load_corpus(DataConfig(corpus=str(folder), root=cfg.root, tokenizer="words"), progress=False)
    assert words.cache_dir != first.cache_dir and words.tokenizer.kind == "words"
    (folder / "doc0.txt").write_text("changed text\n")
    changed = load_corpus(cfg, progress=False)
    assert changed.cache_dir != first.cache_dir


def test_interrupted_cache_build_leaves_nothing(tmp_path, monkeypatch):
    folder = _folder_corpus(tmp_path)
    cfg = DataConfig(corpus=str(folder), root=str(tmp_path / "cache"))
    real_save = np.save
    calls = []

    def dying_save(path, arr):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save(path, arr)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        load_corpus(cfg, progress=False)
    monkeypatch.setattr(np, "save", real_save)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_dir() and p.name.startswith("tokens-")]
    assert leftovers == []
    corpus = load_corpus(cfg, progress=False)
    assert len(corpus.splits["train"]) > 0


def test_local_file_and_presplit_folder(tmp_path):
    one = tmp_path / "one.txt"
    one.write_bytes(b"".join(b"row %d\n" % i for i in range(3000)))
    corpus = load_corpus(DataConfig(corpus=str(one), root=str(tmp_path / "c")), progress=False)
    assert sum(corpus.raw_bytes.values()) == one.stat().st_size
    pre = tmp_path / "pre"
    pre.mkdir()
    for s, n in (("train", 50), ("valid", 5), ("test", 6)):
        (pre / f"{s}.txt").write_text("a b c\n" * n)
    corpus = load_corpus(DataConfig(corpus=str(pre), root=str(tmp_path / "c"), tokenizer="words"), progress=False)
    assert [len(corpus.splits[s]) for s in ("train", "valid", "test")] == [200, 20, 24]


def test_max_tokens_limits_the_splits(tmp_path):
    corpus = load_corpus(DataConfig(root=str(tmp_path), max_tokens=10_000), progress=False)
    assert len(corpus.splits["train"]) == 10_000 and len(corpus.splits["valid"]) == 1_000


def test_unknown_corpus_and_tokenizer_errors(tmp_path):
    with pytest.raises(TxlError, match="neither a known corpus"):
        load_corpus(DataConfig(corpus=str(tmp_path / "missing"), root=str(tmp_path)))
    with pytest.raises(TxlError, match="unknown tokenizer 'morse'"):
        load_corpus(DataConfig(tokenizer="morse", root=str(tmp_path)))


# --------------------------------------------------------------------------- downloads


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def test_download_checks_the_checksum(tmp_path):
    src = tmp_path / "remote.bin"
    src.write_bytes(b"payload" * 1000)
    good = download([src.as_uri()], tmp_path / "got" / "a.bin", _md5(src.read_bytes()), progress=False)
    assert good.read_bytes() == src.read_bytes()
    with pytest.raises(TxlError, match="checksum mismatch for b.bin.*the download was removed"):
        download([src.as_uri()], tmp_path / "got" / "b.bin", "md5:" + "0" * 32, progress=False)
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["a.bin"]  # no partial or bad file left


def test_download_over_http_with_mirror_fallback(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    (served / "data.zip").write_bytes(b"zipped bytes" * 500)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/"
        got = download(
            [base + "missing.zip", base + "data.zip"],
            tmp_path / "dl" / "data.zip",
            _md5(b"zipped bytes" * 500),
            progress=False,
        )
        assert got.read_bytes() == b"zipped bytes" * 500
    finally:
        server.shutdown()
        server.server_close()


def test_offline_message_says_where_to_put_the_file(tmp_path):
    dest = tmp_path / "enwik8" / "enwik8.zip"
    with pytest.raises(TxlError) as err:
        download(["http://127.0.0.1:9/enwik8.zip"], dest, None, progress=False)
    assert f"put it at {dest}" in str(err.value) and "\n" not in str(err.value)
    dest.write_bytes(b"placed by hand")
    assert download(["http://127.0.0.1:9/enwik8.zip"], dest, _md5(b"placed by hand"), progress=False) == dest


def test_extract_member_verifies_size_and_checksum(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("inner/text", b"hello world")
    out = extract_member(archive, "inner/text", tmp_path / "text", _md5(b"hello world"), size=11)
    assert out.read_bytes() == b"hello world"
    with pytest.raises(TxlError, match="does not match its published checksum"):
        extract_member(archive, "inner/text", tmp_path / "other", _md5(b"something else"))
    assert not (tmp_path / "other").exists()


# --------------------------------------------------------------------------- the command


def test_data_stats_command(tmp_path, capsys):
    assert main(["data", "stats", "pystdlib", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "vocabulary 256" in out
    assert main(["data", "stats", "copy", "--set", "data.synthetic.lags=[9]"]) == 0
    assert "scored answers" in capsys.readouterr().out
    assert main(["data", "stats", str(tmp_path / "nope")]) == 2
    assert "neither a known corpus" in capsys.readouterr().err


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    "damage, full",
    [
        ("ids changed in place", True),  # same size: only the checksum sees it
        ("id beyond the vocabulary", True),
        ("truncated array", False),
        ("missing array", False),
        ("missing meta.json", False),
        ("garbage meta.json", False),
    ],
)
def test_a_damaged_token_cache_is_detected_and_rebuilt(tmp_path, damage, full, capsys):
    folder = _folder_corpus(tmp_path)
    cfg = DataConfig(corpus=str(folder), root=str(tmp_path / "cache"), tokenizer="words")  # ids have room beyond it
    good = load_corpus(cfg, progress=False)
    cache, original = good.cache_dir, np.array(good.splits["train"])
    train = cache / "train.npy"
    if damage == "ids changed in place":
        ids = np.load(train, mmap_mode="r+")
        ids[:50] = ids[50:100]
        ids.flush()
        del ids
    elif damage == "id beyond the vocabulary":
        ids = np.load(train, mmap_mode="r+")
        ids[3] = good.vocab_size  # the first id the vocabulary does not have
        ids.flush()
        del ids
    elif damage == "truncated array":
        train.write_bytes(train.read_bytes()[:-40])
    elif damage == "missing array":
        train.unlink()
    elif damage == "missing meta.json":
        (cache / "meta.json").unlink()
    else:
        (cache / "meta.json").write_text("{not json")
    del good
    again = load_corpus(cfg, progress=False, verify=full)
    assert "is damaged" in capsys.readouterr().err
    assert again.cache_dir == cache and np.array_equal(np.array(again.splits["train"]), original)
    assert load_corpus(cfg, progress=False, verify=True).cache_dir == cache  # whole again, and quietly
    assert "damaged" not in capsys.readouterr().err


def test_leftovers_of_dead_builds_and_saves_are_removed(tmp_path):
    from txl.core.io import owner_tag
    from txl.train import checkpoint as ckpt

    folder = _folder_corpus(tmp_path)
    cfg = DataConfig(corpus=str(folder), root=str(tmp_path / "cache"))
    cache = load_corpus(cfg, progress=False).cache_dir
    dead = _dead_pid()
    stale = cache.with_name(f"{cache.name}.tmp-{owner_tag(dead)}")
    stale.mkdir()
    (stale / "train.npy").write_bytes(b"partial")
    live = cache.with_name(f"{cache.name}.tmp-{owner_tag()}")  # a build in progress is left alone
    elsewhere = cache.with_name(f"{cache.name}.tmp-otherhost.{dead}")  # another host's: whether it lives cannot be seen
    elsewhere.mkdir()
    live.mkdir()
    load_corpus(cfg, progress=False)
    assert not stale.exists() and live.exists() and elsewhere.exists()
    root = tmp_path / "checkpoints"
    (root / f".tmp-step-00000004-{owner_tag(dead)}").mkdir(parents=True)
    (root / f".last.link-{owner_tag(dead)}").symlink_to("nowhere")
    assert len(ckpt.clean_stale(root)) == 2 and list(root.iterdir()) == []


def test_data_verify_command(tmp_path, capsys):
    folder = _folder_corpus(tmp_path)
    assert main(["data", "verify", str(folder), "--data-root", str(tmp_path / "cache")]) == 0
    assert "verified" in capsys.readouterr().out


def test_a_folder_with_valid_and_test_but_no_train_says_so(tmp_path, capsys):
    folder = tmp_path / "two"
    folder.mkdir()
    (folder / "valid.txt").write_text("some text\n" * 50)
    (folder / "test.txt").write_text("more text\n" * 50)
    with pytest.raises(TxlError, match=r"holds valid.txt and test.txt but no train file; add train.txt"):
        load_corpus(DataConfig(corpus=str(folder), root=str(tmp_path / "cache")), progress=False)


@pytest.mark.gpu
def test_a_stream_on_a_gpu_copies_from_pinned_memory_and_gives_the_same_segments():
    import torch

    tokens = np.arange(2000) % 251
    mask = np.arange(2000) % 3 == 0
    cpu = list(SegmentStream(tokens, 4, 32, mask=mask).epoch(0))
    gpu = list(SegmentStream(tokens, 4, 32, device="cuda", mask=mask).epoch(0))
    assert len(cpu) == len(gpu)
    for a, b in zip(cpu, gpu):
        assert b.inputs.is_cuda and torch.equal(a.inputs, b.inputs.cpu()) and torch.equal(a.mask, b.mask.cpu())


def test_a_damaged_cache_that_cannot_be_set_aside_is_an_error_not_verified(tmp_path, monkeypatch, capsys):
    """A read-only data root: the damaged cache cannot be renamed; it is refused in one line (no "rebuilding"
    notice before it), never used as if verified."""
    import os

    folder = _folder_corpus(tmp_path)
    cfg = DataConfig(corpus=str(folder), root=str(tmp_path / "cache"), tokenizer="words")
    cache = load_corpus(cfg, progress=False).cache_dir
    (cache / "train.npy").write_bytes((cache / "train.npy").read_bytes()[:-40])

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refuse)
    capsys.readouterr()
    with pytest.raises(TxlError, match="is damaged .* and cannot be set aside \\(Permission denied\\)"):
        load_corpus(cfg, progress=False, verify=True)
    assert "rebuilding" not in capsys.readouterr().err


def test_a_character_vocabulary_of_a_users_text_reads_other_characters_as_unknown_and_counts_them(tmp_path):
    from txl.data import load_corpus
    from txl.data.tokenizers import UNKNOWN_CHAR

    mine = tmp_path / "mine.txt"
    mine.write_text("abc def\n" * 2000)
    corpus = load_corpus(DataConfig(corpus=str(mine), tokenizer="chars", root=str(tmp_path / "d")), progress=False)
    tok = corpus.tokenizer
    assert tok.unk_id == tok.symbols.index(UNKNOWN_CHAR) and tok.vocab_size == len(set("abc def\n")) + 1
    ids = tok.encode(b"a%b")
    assert list(ids) == [tok.encode(b"a")[0], tok.unk_id, tok.encode(b"b")[0]]
    other = tmp_path / "other.txt"
    other.write_text("ab % xyz\n" * 200)
    data = DataConfig(corpus=str(other), tokenizer=str(tmp_path / "vocab.json"), root=str(tmp_path / "d"))
    tok.save(tmp_path / "vocab.json")
    scored = load_corpus(data, progress=False)
    assert sum(scored.unknown.values()) == 4 * 200  # %, x, y, z: read as U+FFFD and counted
    # a vocabulary without the symbol (a registered corpus's, or an earlier txl's) refuses them in one line
    with pytest.raises(TxlError, match="no symbol for unknown characters"):
        CharTokenizer(list("ab")).encode(b"a%")
