"""Tokenizers: bytes, characters, words and sentencepiece. Vocabularies are JSON, never pickles."""

from __future__ import annotations

import collections
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from txl.core.errors import TxlError
from txl.core.io import atomic_write_json

EOS, UNK = "<eos>", "<unk>"


def as_text(data: bytes) -> str:
    """Raw bytes as text; invalid UTF-8 becomes U+FFFD, so text tokenizers accept any file."""
    return data.decode("utf-8", errors="replace")


def smallest_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer type that holds every token id."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} does not fit in 32 bits")


class Tokenizer:
    """Raw split bytes <-> token ids. `unit` names what one token is, for bits-per-unit metrics."""

    kind = ""
    unit = "token"

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def to_json(self) -> dict:
        raise NotImplementedError

    @property
    def unk_id(self) -> int | None:
        """The id that stands for anything outside the vocabulary, if the tokenizer has one."""
        return None

    @property
    def fingerprint(self) -> str:
        """Changes whenever the vocabulary does; part of every token cache key."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_json())


class ByteTokenizer(Tokenizer):
    """256 symbols, one per byte (enwik8-style character modelling)."""

    kind = "bytes"
    unit = "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).copy()

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        return {"kind": self.kind}


UNKNOWN_CHAR = "\ufffd"  # the replacement character: what a character vocabulary reads a character it lacks as


class CharTokenizer(Tokenizer):
    """One symbol per Unicode character of the corpus (text8-style), and on a user's text U+FFFD for a character
    the corpus lacks (a registered corpus's inventory, or one built before txl kept U+FFFD, has none: other text
    with new characters is refused there)."""

    kind = "chars"
    unit = "char"

    def __init__(self, symbols: Sequence[str]):
        self.symbols = list(symbols)
        self._codes = np.array([ord(s) for s in self.symbols], dtype=np.uint32)
        self._order = np.argsort(self._codes)

    @classmethod
    def build(cls, texts: Iterable[bytes], unknown: bool = True) -> CharTokenizer:
        """Every character of `texts`, and (with `unknown`) U+FFFD for those other text has and they lack."""
        seen: set[str] = {UNKNOWN_CHAR} if unknown else set()
        for data in texts:
            seen |= set(as_text(data))
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    @property
    def unk_id(self) -> int | None:
        return self.symbols.index(UNKNOWN_CHAR) if UNKNOWN_CHAR in self.symbols else None

    def encode(self, data: bytes) -> np.ndarray:
        codes = np.frombuffer(as_text(data).encode("utf-32-le"), dtype=np.uint32)
        sorted_codes = self._codes[self._order]
        pos = np.searchsorted(sorted_codes, codes).clip(0, len(sorted_codes) - 1)
        missing = sorted_codes[pos] != codes
        ids = self._order[pos]
        if missing.any():
            if self.unk_id is None:
                char = chr(int(codes[missing.argmax()]))
                raise TxlError(
                    f"character {char!r} is not in this character vocabulary, which has no symbol for unknown "
                    "characters (it was built before txl kept one); score text of its characters, or retrain"
                )
            ids = np.where(missing, self.unk_id, ids)  # counted as unknown, as a word vocabulary's <unk> is
        return ids.astype(smallest_dtype(self.vocab_size))

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.symbols[int(i)] for i in ids)

    def to_json(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols}


class WordTokenizer(Tokenizer):
    """Whitespace-separated words, `<eos>` at each line end, `<unk>` below a frequency cut-off.

    Symbols are sorted by training-set frequency, as adaptive softmax cutoffs assume.
    """

    kind = "words"
    unit = "word"

    def __init__(self, symbols: Sequence[str]):
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.unk = self.index[UNK]

    @classmethod
    def build(cls, train: bytes, min_freq: int = 1, max_size: int | None = None) -> WordTokenizer:
        counts = collections.Counter(as_text(train).split())
        counts.pop(EOS, None)
        counts.pop(UNK, None)
        kept = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq]
        if max_size is not None:
            kept = kept[: max(0, max_size - 2)]
        return cls([EOS, UNK] + kept)

    @classmethod
    def from_list(cls, path: Path) -> WordTokenizer:
        """A fixed vocabulary, one symbol per line in id order (e.g. a pretrained model's)."""
        if not path.is_file():  # a FIFO would wait, a device never end
            raise TxlError(f"word list {path} " + ("is not a regular file" if path.exists() else "does not exist"))
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TxlError(f"word list {path} is not UTF-8 text") from None
        except OSError as e:
            raise TxlError(f"cannot read word list {path}: {e.strerror or e}") from None
        symbols = [line.strip() for line in text.splitlines() if line.strip()]
        for special in (EOS, UNK):
            if special not in symbols:
                raise TxlError(f"word list {path} has no {special} symbol; a word vocabulary needs {EOS} and {UNK}")
        return cls(symbols)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    @property
    def unk_id(self) -> int | None:
        return self.unk

    def words(self, data: bytes) -> list[str]:
        out: list[str] = []
        for line in as_text(data).splitlines():
            out += line.split()
            out.append(EOS)
        return out

    def encode(self, data: bytes) -> np.ndarray:
        get, unk = self.index.get, self.unk
        return np.fromiter((get(w, unk) for w in self.words(data)), dtype=smallest_dtype(self.vocab_size))

    def decode(self, ids: Iterable[int]) -> str:
        lines, line = [], []
        for i in ids:
            word = self.symbols[int(i)]
            if word == EOS:
                lines.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(word)
        return "".join(lines) + " ".join(line)

    def to_json(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols}


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model (unigram or BPE) that round-trips text exactly (identity normalisation, byte fallback)."""

    kind = "sentencepiece"
    unit = "piece"

    def __init__(self, model_path: str | Path):
        import sentencepiece as spm

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise TxlError(f"sentencepiece model {self.model_path} does not exist")
        self.model_bytes = self.model_path.read_bytes()
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        except Exception as e:  # sentencepiece raises bare RuntimeErrors on corrupt models
            raise TxlError(f"{self.model_path} is not a sentencepiece model ({e})") from None

    @classmethod
    def train(
        cls,
        train: bytes,
        out_path: str | Path,
        vocab_size: int,
        model_type: str = "unigram",
        max_sentences: int = 2_000_000,
    ) -> SentencePieceTokenizer:
        """Train on the training split's lines; the model file is written atomically to out_path."""
        import sentencepiece as spm

        from txl.core.io import atomic_path

        out_path = Path(out_path)
        lines = [line for line in as_text(train).splitlines() if line.strip()]
        with atomic_path(out_path) as tmp:
            proto = _SpModelWriter()
            try:
                spm.SentencePieceTrainer.train(
                    sentence_iterator=iter(lines),
                    model_writer=proto,
                    vocab_size=vocab_size,
                    model_type=model_type,
                    character_coverage=1.0,
                    byte_fallback=True,
                    normalization_rule_name="identity",
                    remove_extra_whitespaces=False,
                    add_dummy_prefix=False,
                    split_digits=False,
                    allow_whitespace_only_pieces=True,
                    input_sentence_size=max_sentences,
                    shuffle_input_sentence=True,
                    max_sentence_length=1 << 16,
                    num_threads=2,
                    minloglevel=2,
                )
            except RuntimeError as e:
                last = str(e).splitlines()[-1]
                if m := re.search(r"(\d+) vs (\d+)", last):
                    raise TxlError(
                        f"sentencepiece vocabulary size {m.group(1)} is too small for this text: it needs at least "
                        f"{m.group(2)} (256 byte pieces plus the characters); raise data.vocab_size"
                    ) from None
                raise TxlError(f"sentencepiece training failed: {last}") from None
            tmp.write_bytes(proto.data)
        return cls(out_path)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def unk_id(self) -> int | None:
        return self.sp.unk_id()

    def encode(self, data: bytes) -> np.ndarray:
        lines = as_text(data).splitlines(keepends=True)
        ids = self.sp.encode(lines, num_threads=2) if lines else []
        return np.fromiter((i for piece in ids for i in piece), dtype=smallest_dtype(self.vocab_size))

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def to_json(self) -> dict:
        return {"kind": self.kind, "model_sha256": hashlib.sha256(self.model_bytes).hexdigest()}


class _SpModelWriter:
    """Receives the trained model from sentencepiece, so it is written once, atomically, by us."""

    def __init__(self):
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer saved as JSON (or a sentencepiece .model file)."""
    path = Path(path)
    if path.suffix == ".model":
        return SentencePieceTokenizer(path)
    if not path.is_file():
        raise TxlError(f"tokenizer {path} is not a file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TxlError(f"cannot read tokenizer {path}: {type(e).__name__}: {str(e)[:120]}") from None
    if not isinstance(data, dict):
        raise TxlError(
            f"tokenizer {path} holds a JSON {type(data).__name__}, not a txl tokenizer (an object with 'kind')"
        )
    kind = data.get("kind")
    if kind == "bytes":
        return ByteTokenizer()
    if kind in ("chars", "words"):
        symbols = data.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(x, str) for x in symbols):
            raise TxlError(f"tokenizer {path}: 'symbols' must be a list of strings")
        if len(set(symbols)) != len(symbols) or (kind == "chars" and any(len(x) != 1 for x in symbols)):
            raise TxlError(
                f"tokenizer {path}: 'symbols' repeat a symbol, or a char tokenizer's are not single characters"
            )
        if kind == "words" and UNK not in symbols:
            raise TxlError(f"tokenizer {path}: a word tokenizer's symbols must include {UNK}")
        return CharTokenizer(symbols) if kind == "chars" else WordTokenizer(symbols)
    if kind == "sentencepiece":
        model = data.get("model_file", "sp.model")
        if not isinstance(model, str) or Path(model).name != model:
            raise TxlError(f"tokenizer {path}: model_file must name a file beside it, got {model!r}")
        return SentencePieceTokenizer(path.with_name(model))
    raise TxlError(f"{path}: unknown tokenizer kind {kind!r} (bytes, chars, words or sentencepiece)")


TOKENIZERS = ("bytes", "chars", "words", "sentencepiece")
