"""The experiment registry: named families of runs, run side by side and recorded in one results table.

An experiment is a plain function of a scale (txl.scales: "tiny" for tests, "small" and "medium" for a CPU,
"paper" for the published size) returning an Experiment: a base RunConfig and named variants. A variant
either trains (its own memory plan, ranges, attention, overrides) or only evaluates another variant's trained
model with another plan: an evaluation-time intervention, the cheapest ablation there is.

The registry knows nothing of its entries: definitions live in the package
`experiments/` and register themselves with `@experiment` when that package is
imported, which the command line (and a test) does. Running a sweep is txl.sweep's (in this process) and
txl.cluster's (as cluster jobs).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from txl.config import RunConfig, apply_overrides
from txl.errors import TxlError
from txl.plans import apply_plans
from txl.results import read_results
from txl.scales import SCALES


@dataclass
class Variant:
    """One arm: a training run, or (with `of`) an evaluation-time plan on another arm's trained model."""

    name: str
    memory: str | None = None  # memory plan: for training, or for evaluation when `of` is set
    attn_range: str | None = None
    attn: str | None = None  # attention variants per layer (training only)
    set: list[str] = field(default_factory=list)  # further dotted overrides (training only)
    of: str | None = None  # evaluate this trained variant's model instead of training
    eval_tgt_len: int | None = None
    same_length: bool | None = None
    group: str = ""  # variants that compare with each other (the same task); reports draw a frontier per group
    memory_dtype: str | None = None  # how each layer stores its memory (txl.quantize), trained or at evaluation
    sinks: str | None = None  # attention sinks per layer (txl.memory.take_sinks), trained or at evaluation
    compress: str | None = None  # compressed memory per layer (txl.memory.Compression), trained or at evaluation
    adapt_steps: int | None = None  # with `of`: train of's model under this plan for so many steps (fresh optimizer)

    def plan_texts(self) -> dict[str, str | None]:
        """The plan dimensions this variant sets, by flag name (see txl.plans.PLAN_FLAGS)."""
        texts = {"memory": self.memory, "attn_range": self.attn_range, "memory_dtype": self.memory_dtype}
        texts.update(sinks=self.sinks, compress=self.compress)
        return {**texts, **({"attn": self.attn} if self.trains else {})}

    @property
    def trains(self) -> bool:
        """Trained from scratch (neither evaluated nor adapted from another variant's model)."""
        return self.of is None

    @property
    def adapts(self) -> bool:
        """Trained for `adapt_steps` from `of`'s trained model, under this variant's plan."""
        return self.of is not None and self.adapt_steps is not None

    @property
    def kind(self) -> str:
        """As results rows name it: train, adapt or eval."""
        return "train" if self.trains else "adapt" if self.adapts else "eval"


@dataclass
class Experiment:
    """A named family of runs at one scale; `name` is filled in from `@experiment` (written once, there)."""

    scale: str
    base: RunConfig
    variants: list[Variant]
    summary: str = ""  # a few words for report titles (`txl list` shows the longer description @experiment gives)
    seeds: list[int] = field(default_factory=lambda: [0])  # `txl run --seeds N` makes it 0..N-1
    x_axis: str = "cached_positions"  # what the report plots quality against
    baseline: str | None = None  # the variant others are compared with, paired by seed; None: the first
    data_tag: str = ""  # set when run on other data than its definition's: its results then go to a folder of their own
    after: Callable | None = None  # after(exp, root, split): run once every job is done (analyses that add rows)
    name: str = ""

    def title(self, rows: list[dict]) -> str:
        """Name, scale and the data the rows were measured on (corpus, tokenizer, split and its size), for reports."""
        data = next((r.data for r in rows if r.data), None)
        split = next((r.split for r in rows if r.split), None)
        on = ""
        if data:
            tokens = data.get("tokens", {}).get(split) if split else None
            on = (
                f" on {data['corpus']} ({data['tokenizer']}"
                + (f", {split} split of {tokens:,} tokens" if tokens else "")
                + ")"
            )
        elif split:
            on = f" ({split} split)"
        return f"{self.name} ({self.scale}){on}: {self.summary}"

    @property
    def folder(self) -> str:
        """NAME/SCALE, or NAME/SCALE-on-TAG on other data, under the results root."""
        return f"{self.name}/{self.scale}" + (f"-on-{self.data_tag}" if self.data_tag else "")

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise TxlError(f"experiment {self.name} has no variant {name!r}")

    def config(self, variant: Variant, seed: int) -> RunConfig:
        """The resolved run config of a training variant; of an adapted one, its source's config under its plan
        for its steps (the source's checkpoint, `train.init_from`, is set where it trains)."""
        if variant.adapts:  # a fine-tune of a trained model: a tenth of its learning rate, decayed over the steps,
            run = self.config(self.variant(variant.of), seed)  # any warm-up within the first tenth of them
            run.train.steps = variant.adapt_steps
            run.train.lr /= 10
            run.train.min_lr = min(run.train.min_lr, run.train.lr)
            run.train.warmup = min(run.train.warmup, variant.adapt_steps // 10)
        else:
            run = copy.deepcopy(self.base)
        run.model = apply_plans(run.model, **variant.plan_texts())
        apply_overrides(run, variant.set)
        run.train.seed = seed
        return run


EXPERIMENTS: dict[str, tuple[str, Callable[[str], Experiment]]] = {}


def experiment(name: str, description: str):
    """Register `fn(scale) -> Experiment` under `name`; a second registration of a name is refused."""

    def deco(fn: Callable[[str], Experiment]) -> Callable[[str], Experiment]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        EXPERIMENTS[name] = (description, fn)
        return fn

    return deco


def list_experiments(pattern: str = "*") -> list[tuple[str, str]]:
    return [(name, desc) for name, (desc, _) in EXPERIMENTS.items() if fnmatch.fnmatch(name, pattern)]


def get_experiment(name: str, scale: str = "small") -> Experiment:
    if name not in EXPERIMENTS:
        close = [n for n in EXPERIMENTS if name.split("/")[-1] in n]
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see 'txl list')"
        raise TxlError(f"unknown experiment {name!r}{hint}")
    if scale not in SCALES:
        raise TxlError(f"unknown scale {scale!r} (use {', '.join(SCALES)})")
    exp = EXPERIMENTS[name][1](scale)
    if exp.name and exp.name != name:
        raise ValueError(f"experiment {name} builds an Experiment named {exp.name!r}: leave the name to @experiment")
    exp.name = name
    names = [v.name for v in exp.variants]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment {name} repeats a variant name")
    for v in exp.variants:
        if v.of is not None and v.of not in names:
            raise ValueError(f"experiment {name}: variant {v.name} evaluates unknown variant {v.of}")
        if v.of is not None and not exp.variant(v.of).trains:
            raise ValueError(f"experiment {name}: variant {v.name} needs {v.of}, which is not trained from scratch")
    if (
        exp.baseline is not None and exp.baseline not in names and exp.after is None
    ):  # `after` may add the baseline's rows
        raise ValueError(f"experiment {name}: baseline {exp.baseline} is not one of its variants")
    return exp


def results_path(root: Path, exp: Experiment) -> Path:
    return root / exp.folder / "results.jsonl"


def retarget(exp: Experiment, corpus: str | None = None, tokenizer: str | None = None) -> Experiment:
    """The experiment on other data: its base reads `corpus` with `tokenizer`, and its results and runs go to
    NAME/SCALE-on-TAG, so results on two corpora (or tokenizers) never share a results file."""
    data = exp.base.data
    if corpus is not None and corpus != data.corpus:
        data.corpus = corpus
    else:
        corpus = None
    if tokenizer is not None and tokenizer != data.tokenizer:
        data.tokenizer = tokenizer
    else:
        tokenizer = None
    parts = []
    if corpus is not None:
        path = Path(corpus).expanduser()
        parts.append(
            path.name + (f"-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:6]}" if path.exists() else "")
        )
    if tokenizer is not None:
        parts.append(Path(tokenizer).stem)
    exp.data_tag = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-")
    return exp


def other_results(root: Path, exp: Experiment) -> list[str]:
    """The --corpus flags that name this experiment's results on other data at its scale, read back from the rows
    under NAME/SCALE-on-*: what `txl report` suggests when the plain folder has none."""
    flags = []
    for path in sorted((root / exp.name).glob(f"{exp.scale}-on-*/results.jsonl")):
        data = next((r.data for r in read_results(path, warn=False) if r.data), None)
        if data is None:
            continue
        flags.append(f"--corpus {data.get('source') or data.get('corpus')}")
    return flags


def run_dir(root: Path, exp: Experiment, variant: str, seed: int) -> Path:
    """Where a variant's seed trains; the folder name keeps letters, digits and . _ = -, so no shell quoting is
    needed."""
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", variant).strip("-") or "variant"
    return root / exp.folder / "runs" / slug / f"seed{seed}"
