"""A run folder: its config and command, the tokenizer, the metrics log, TensorBoard and checkpoints.

    RUN/config.json        the resolved run config      RUN/metrics.jsonl  one row per log, validation, evaluation
    RUN/command.txt        the command that started it  RUN/tb/            TensorBoard event files
    RUN/tokenizer/         what turns text into ids     RUN/checkpoints/   step-N folders, `last` and `best`
    RUN/result.json, RUN/eval.json                      the final metrics

Only rank 0 writes; on other ranks a RunFolder is inert.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from txl.config import (
    ConfigError,
    RunConfig,
    TrainConfig,
    apply_overrides,
    differences,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from txl.core.devices import pick_device
from txl.core.errors import TxlError
from txl.core.io import append_line, atomic_write_json, atomic_write_text, read_jsonl
from txl.core.locks import FolderLock
from txl.data import Corpus, load_corpus
from txl.data.tokenizers import Tokenizer, load_tokenizer
from txl.evaluation.evaluate import EvalSpec
from txl.model.plans import check_run
from txl.model.transformer import TransformerXL
from txl.train import checkpoint as ckpt

log = logging.getLogger(__name__)

RESUMABLE_KEYS = ("train.steps", "train.log_every", "train.eval_every", "train.save_every", "train.eval_segments")


class RunFolder:
    """Where one run keeps its files; `writes` is False on every rank but 0."""

    def __init__(self, path: str | Path, writes: bool = True):
        self.path, self.writes = Path(path), writes
        self.writer = None
        self._lock = FolderLock(self.path)

    def lock(self) -> None:
        """Hold the folder for this process; a second writer is refused with a message naming this one."""
        if self.writes:
            self._lock.acquire()

    def unlock(self, remove_if_unused: bool = False) -> None:
        """Let the folder go; with `remove_if_unused`, remove it if nothing but the lock was written (while still
        holding the lock, so no other process can have taken it meanwhile)."""
        if (
            remove_if_unused
            and self._lock.held
            and self.path.is_dir()
            and [p.name for p in self.path.iterdir()] == [".lock"]
        ):
            (self.path / ".lock").unlink(missing_ok=True)
            self.path.rmdir()
        self._lock.release()

    def start(self, run: RunConfig, corpus: Corpus, command: str | None) -> None:
        """A fresh run: its config, command line and tokenizer files."""
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "metrics.jsonl").unlink(
            missing_ok=True
        )  # left by an attempt that died before its first checkpoint
        save_config(run, self.path / "config.json")
        atomic_write_text(self.path / "command.txt", _command(command) + "\n")
        atomic_write_json(self.path / "versions.json", versions())
        tok_dir = self.path / "tokenizer"
        tok_dir.mkdir(exist_ok=True)
        if corpus.cache_dir is not None:
            for name in ("vocab.json", "sp.model"):
                if (corpus.cache_dir / name).exists():
                    (tok_dir / name).write_bytes((corpus.cache_dir / name).read_bytes())
        else:
            corpus.tokenizer.save(tok_dir / "vocab.json")

    def record_changes(self, run: RunConfig) -> list[str]:
        """On resume: the settings that may change (RESUMABLE_KEYS) as this session runs them, written to
        config.json so that a later resume continues with them; returns what changed, as 'key: old -> new'."""
        path = self.path / "config.json"
        if not self.writes or not path.exists():
            return []
        saved = load_config(path)
        changed = []
        for key in RESUMABLE_KEYS:
            section, name = key.split(".")
            old, new = getattr(getattr(saved, section), name), getattr(getattr(run, section), name)
            if old != new:
                changed.append(f"{key}: {old} -> {new}")
        if changed:
            save_config(run, path)
        return changed

    def note_resume(self, step: int, command: str | None) -> None:
        """Add the resuming command to command.txt, and this session's versions to versions.json."""
        if not self.writes:
            return
        path = self.path / "command.txt"
        before = path.read_text() if path.exists() else ""
        atomic_write_text(path, before + f"# resumed at step {step}:\n{_command(command)}\n")
        seen = json.loads((self.path / "versions.json").read_text()) if (self.path / "versions.json").exists() else {}
        now = versions()
        if {k: v for k, v in seen.items() if k != "resumed"} != now:
            seen.setdefault("resumed", []).append({"step": step, **now})
            atomic_write_json(self.path / "versions.json", seen)

    def rewind(self, step: int) -> None:
        """On resume from `step`: drop the log rows a killed process wrote after that checkpoint, so the
        rows it writes again are not doubled and the log reads as the uninterrupted run's."""
        path = self.path / "metrics.jsonl"
        if not self.writes or not path.exists():
            return
        rows = read_jsonl(path, on_bad=lambda n, why: None)
        kept = [r for r in rows if r.get("step", 0) <= step]
        if len(kept) != len(rows):
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def open_tensorboard(self) -> None:
        if self.writes:
            from torch.utils.tensorboard import SummaryWriter  # slow to import; only the writing rank needs it

            self.writer = SummaryWriter(str(self.path / "tb"))

    def log(self, row: dict, prefix: str) -> None:
        """Append a row to metrics.jsonl (tagged with its kind) and its numbers to TensorBoard."""
        if not self.writes:
            return
        append_line(self.path / "metrics.jsonl", json.dumps({"kind": prefix, **row}))
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self.writer.add_scalar(f"{prefix}/{key}", value, row["step"])

    def save(
        self, step: int, model: torch.nn.Module, state: dict, run: RunConfig, meta: dict, names: tuple[str, ...]
    ) -> None:
        if self.writes:
            ckpt.save_checkpoint(self.path / "checkpoints", step, model, state, to_dict(run), meta, names)

    def write_json(self, name: str, data: dict) -> None:
        if self.writes:
            atomic_write_json(self.path / name, data)

    def hparams(self, hp: dict, metrics: dict) -> None:
        if self.writer is not None:
            self.writer.add_hparams(hp, metrics, run_name=".")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def tokenizer_file(path: str | Path, run: RunConfig) -> str:
    """The tokenizer a trained model reads text with: the one saved in its run folder, else a tokenizer
    that needs no training data (bytes, or a file given at import)."""
    path = Path(path)
    for folder in (
        path,
        path.parent.parent,
        path.parent.parent.parent,
    ):  # run folder, checkpoints/step-N, checkpoints/last
        if (folder / "tokenizer" / "vocab.json").is_file():
            return str((folder / "tokenizer" / "vocab.json").resolve())
    kind = run.data.tokenizer
    if kind == "bytes" or Path(kind).suffix in (".json", ".model", ".txt"):
        return kind
    raise TxlError(
        f"{path} has no saved tokenizer, and a '{kind}' tokenizer built from other text would give other ids; "
        "give the model's vocabulary file with --tokenizer"
    )


def init_from_config(source: str | Path) -> RunConfig:
    """The config a fresh run started from `source`'s weights begins with (txl train --init-from): the source's
    own (a txl run or an import), reading text with the source's tokenizer, `train.init_from` naming its checkpoint
    folder. Flags then change the plan, the corpus and the training; the widths, layers and vocabulary stay."""
    folder = ckpt.find_checkpoint(source, "last")
    if folder is None:
        raise TxlError(f"--init-from {source}: no checkpoint there (give a run folder or a checkpoint folder)")
    run = from_dict(RunConfig, ckpt.read_config(folder))
    run.data.tokenizer = tokenizer_file(source, run)
    run.train.init_from = str(folder.resolve())
    return run


def adapt_recipe(train: TrainConfig, steps: int) -> TrainConfig:
    """How a trained model is adapted to another plan (txl train --init-from, an experiment's adapt variants): for
    `steps`, at a tenth of its learning rate, decayed over them, any warm-up within their first tenth."""
    train.steps = steps
    train.lr /= 10
    train.min_lr = min(train.min_lr, train.lr)
    train.warmup = min(train.warmup, steps // 10)
    return train


def run_root(checkpoint: Path) -> Path:
    """The run folder a checkpoint folder belongs to (the folder itself when it is not under checkpoints/)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint


def _command(command: str | None) -> str:
    return command or " ".join(shlex.quote(a) for a in sys.argv)


def versions() -> dict:
    """What made a run: txl, torch, Python and numpy versions, txl's git commit when it runs from a checkout, and
    torch's CPU threads (on a CPU the order its sums are added in, so a run's last digits depend on it)."""
    import platform
    import subprocess

    import numpy

    from txl import __version__

    commit = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "txl": __version__,
        "commit": commit,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "threads": torch.get_num_threads(),
    }


def resume_changes(saved: RunConfig, asked: RunConfig) -> list[str]:
    """What `asked` changes of a run's saved config beyond what a resume may change (RESUMABLE_KEYS), as
    'field: saved -> asked'."""
    return [d for d in differences(to_dict(saved), to_dict(asked)) if d.partition(":")[0] not in RESUMABLE_KEYS]


def prepare_resume(run_dir: Path, overrides: list[str]) -> RunConfig:
    """The saved config of a run folder, with only the overrides that do not change what is trained."""
    path = run_dir / "config.json"
    if not path.exists():
        raise TxlError(f"nothing to resume in {run_dir}: it has no config.json")
    run = load_config(path)
    try:
        check_run(run)
    except TxlError as e:  # a hand-edited value: named with the file it is in
        raise TxlError(f"{path}: {e}") from None
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"--resume keeps the run's own settings; only {', '.join(RESUMABLE_KEYS)} may change, not {key}"
            )
    return apply_overrides(run, overrides)


@dataclass
class Trained:
    """A trained model ready to use: the model (in eval mode, in its checkpoint's dtype, on its device), its run
    config, the checkpoint folder it came from, and the path the user gave."""

    model: TransformerXL
    run: RunConfig
    folder: Path
    path: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def root(self) -> Path:
        """The run folder: where its evaluations and analyses are kept."""
        return run_root(self.folder)

    def spec(self, protocol: str | None = None, *, whole_split: bool = False, **flags) -> EvalSpec:
        """How this model is evaluated: its run's settings, a protocol's and flags' (see EvalSpec.for_run)."""
        return EvalSpec.for_run(self.run, self.device, protocol, whole_split=whole_split, **flags)

    def tokenizer(self, given: str | None = None) -> Tokenizer:
        """The tokenizer the model reads and writes text with (its own, or the vocabulary file `given`), refused if
        its vocabulary is not the model's."""
        path = given or tokenizer_file(self.path, self.run)
        tokenizer = load_tokenizer(path)
        if tokenizer.vocab_size != self.run.model.vocab_size:
            raise TxlError(
                f"tokenizer {path} has {tokenizer.vocab_size} symbols, the model {self.run.model.vocab_size}: it is "
                "damaged or another model's; give the model's vocabulary with --tokenizer"
            )
        return tokenizer

    def corpus(self, spec: EvalSpec | None = None, progress: bool = False) -> Corpus:
        """The text the spec scores: the run's corpus, or the spec's other corpus read with the run's own
        tokenizer (unknown words map to its unknown symbol, and are counted)."""
        data = copy.deepcopy(self.run.data)
        if spec is not None and spec.corpus:
            data.corpus = spec.corpus
            data.tokenizer = spec.tokenizer or tokenizer_file(self.path, self.run)
            if spec.split == "whole":  # another text scored whole: the run's cap on its training text is not its
                data.max_tokens = None
        elif spec is not None and spec.split == "whole" and data.max_tokens:
            log.warning(
                f"the whole of {data.corpus} is scored as the run read it, capped at data.max_tokens="
                f"{data.max_tokens:,} training tokens (a tenth of that of valid and test)"
            )
        corpus = load_corpus(data, progress=progress)
        if spec is not None and spec.split == "whole":
            corpus = corpus.with_whole()
        if corpus.vocab_size != self.run.model.vocab_size:
            hint = (
                "; give the text it reads with --corpus (and its vocabulary with --tokenizer)"
                if spec is None or not spec.corpus
                else ""
            )
            raise TxlError(
                f"corpus {data.corpus!r} has {corpus.vocab_size} tokens, the model {self.run.model.vocab_size}: "
                f"it was made for other text{hint}"
            )
        return corpus


def _runs_inside(path: str | Path, which: str) -> str:
    """What to give instead of a folder without a checkpoint: the run folders inside it (an experiment's variant
    folder holds one per seed), else what a run folder is."""
    inside = sorted(p for p in Path(path).glob("*") if p.is_dir() and ckpt.find_checkpoint(p, which) is not None)
    if not inside:
        return "give a run folder or a checkpoint folder"
    named = ", ".join(str(p) for p in inside[:3]) + (" ..." if len(inside) > 3 else "")
    return f"it holds the run folder{'s' if len(inside) > 1 else ''} {named}: give one"


def load_trained(path: str | Path, device: str = "auto", which: str = "last") -> Trained:
    """A trained model from a run folder or checkpoint folder, in eval mode, in the dtype its weights are stored in.

    A run that is training may replace (and prune) the checkpoint between finding it and
    reading it; then the newer one is found and read.
    """
    for attempt in range(5):
        folder = ckpt.find_checkpoint(path, which)
        if folder is None:
            raise TxlError(f"no checkpoint found at {path} ({_runs_inside(path, which)})")
        try:
            run = from_dict(RunConfig, ckpt.read_config(folder))
            try:
                check_run(run)  # every section, not only the model's: the file may have been edited by hand
            except ConfigError as e:
                raise TxlError(f"{folder / 'config.json'}: {e}") from None
            model = TransformerXL(run.model)
            dtype = ckpt.weights_dtype(folder)
            if dtype is not None and dtype != model.dtype:
                model.to(dtype)
            ckpt.load_weights(model, folder)
            break
        except FileNotFoundError:
            if attempt == 4:
                raise TxlError(f"the checkpoint at {path} kept changing while it was read; try again") from None
    model.to(pick_device(device))
    _say_edited(run_root(folder) / "config.json", run)
    return Trained(model.eval(), run, folder, Path(path))


def _say_edited(path: Path, run: RunConfig) -> None:
    """A run folder's config.json is the one a person reads and edits, but the model is its checkpoint's: say so
    when the two differ (beyond what a resume changes), naming the fields, rather than ignore the edit unsaid."""
    try:
        edited = [d for d in resume_changes(load_config(path), run) if not d.startswith("train.init_from")]
    except (TxlError, OSError, ValueError) as e:
        edited = [f"it cannot be read ({str(e)[:80]})"] if path.exists() else []
    if edited:
        log.warning(
            f"{path} differs from the checkpoint's own config (file -> checkpoint: {'; '.join(edited[:3])}"
            f"{'; ...' if len(edited) > 3 else ''}): the checkpoint's is the model's, and is used"
        )
