"""The experiment registry: named families of runs, run side by side and recorded in one results table.

An experiment is a plain function of a scale (txl.core.scales: "tiny" for tests, "small" and "medium" for a CPU,
"paper" for the published size) returning an Experiment: a base RunConfig and named variants. A variant
either trains (its own memory plan, ranges, attention, overrides) or only evaluates another variant's trained
model with another plan: an evaluation-time intervention, the cheapest ablation there is.

The registry knows nothing of its entries: definitions live in the package
`experiments/` and register themselves with `@experiment` when that package is
imported, which the command line (and a test) does. Running a sweep is txl.study.sweep's (in this process) and
txl.study.cluster's (as cluster jobs).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from txl.config import RunConfig, apply_overrides, differences, load_config, to_dict
from txl.core.errors import TxlError
from txl.core.scales import SCALES
from txl.data.content import content_hash
from txl.data.corpora import cache_root
from txl.model.dimensions import DIMENSIONS
from txl.model.plans import apply_plans
from txl.study.results import config_hash, read_results
from txl.train.runs import adapt_recipe

PLAN_FIELDS = ("memory", "attn_range", "attn", "memory_dtype", "sinks", "compress")  # Variant's own plan fields


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
    memory_dtype: str | None = None  # how each layer stores its memory (txl.model.quantize), trained or at evaluation
    sinks: str | None = None  # attention sinks per layer (txl.model.cache.take_sinks), trained or at evaluation
    compress: str | None = None  # compressed memory per layer (txl.plan.language.Compression), trained or at evaluation
    adapt_steps: int | None = None  # with `of`: train of's model under this plan for so many steps (fresh optimizer)
    plan: dict[str, str] = field(default_factory=dict)  # texts of dimensions registered beyond the fields above
    budget_bytes: int | None = None  # the memory bytes its group allows: its rows record it, reports show the share

    def plan_texts(self) -> dict[str, str | None]:
        """The text of each plan dimension this variant may set (None: not set), by flag name (txl.model.dimensions:
        the fields above, or `plan` for one registered later); an attention variant only where it trains."""
        own = PLAN_FIELDS
        return {
            dim.flag: getattr(self, dim.flag) if dim.flag in own else self.plan.get(dim.flag)
            for dim in DIMENSIONS.values()
            if dim.at_eval or self.trains
        }

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
    command: str = ""  # the txl run command that runs this sweep, as its hints and run folders give it
    _contents: dict = field(default_factory=dict, repr=False, compare=False)  # corpus -> content hash (content)

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
        if variant.adapts:  # a fine-tune of a trained model (txl.train.runs.adapt_recipe)
            run = self.config(self.variant(variant.of), seed)
            adapt_recipe(run.train, variant.adapt_steps)
        else:
            run = copy.deepcopy(self.base)
        run.model = apply_plans(run.model, **variant.plan_texts())
        apply_overrides(run, variant.set)
        run.train.seed = seed
        return run

    def identity(self, variant: Variant, seed: int) -> dict:
        """What the model a training (or adapting) variant's seed trains is: its run config, the config of the
        model it starts from, and the content hash of a user's text (txl.data.content). Its hash (`model_key`)
        names the run folder, so a changed setting or an edited corpus trains a model of its own."""
        run = self.config(variant, seed)
        ident = {"train": to_dict(run)}
        if variant.adapts:
            ident["from"] = to_dict(self.config(self.variant(variant.of), seed))
        content = self.content(run.data)
        if content is not None:  # named only for a user's text: results on registered corpora keep their hashes
            ident["data"] = content
        return ident

    def content(self, data) -> str | None:
        """The content hash of a user's text (txl.data.content), taken once per corpus for this experiment: every
        job of a sweep is keyed by the text as the sweep found it."""
        if data.corpus not in self._contents:
            self._contents[data.corpus] = content_hash(data)
        return self._contents[data.corpus]

    def model_key(self, variant: str, seed: int) -> str:
        """The hash of `identity`: the key of a trained (or adapted) model, its run folder's and its rows'."""
        return config_hash(self.identity(self.variant(variant), seed))


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


def retarget(
    exp: Experiment, corpus: str | None = None, tokenizer: str | None = None, vocab_size: int | None = None
) -> Experiment:
    """The experiment on other data: its base reads `corpus` with `tokenizer` (of `vocab_size` pieces or words),
    and its results and runs go to NAME/SCALE-on-TAG, so results on two corpora (or tokenizers, or vocabularies)
    never share a results file."""
    data = exp.base.data
    if vocab_size is not None and vocab_size != data.vocab_size:
        data.vocab_size = vocab_size
    else:
        vocab_size = None
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
    if vocab_size is not None:
        parts.append(f"v{vocab_size}")
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


IDENTITY = "identity.json"  # in a sweep's run folder: the identity (and key) of the model it trains


def run_dir(root: Path, exp: Experiment, variant: str, seed: int) -> Path:
    """Where a variant's seed trains: runs/VARIANT/seedN-KEY, KEY the first 8 digits of its `model_key`, so a
    run folder holds one configuration on one text and nothing resumes or scores another's model. (A folder of
    an earlier txl, runs/VARIANT/seedN, is used while its config is this one's.) The folder name keeps letters,
    digits and . _ = -, so no shell quoting is needed."""
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", variant).strip("-") or "variant"
    base = root / exp.folder / "runs" / slug
    folder = base / f"seed{seed}-{exp.model_key(variant, seed)[:8]}"
    legacy = base / f"seed{seed}"
    if folder.exists() or not (legacy / "config.json").exists():
        return folder
    run = exp.config(exp.variant(variant), seed)  # on a user's text no earlier folder is taken: it names no content
    return legacy if exp.content(run.data) is None and not config_changes(legacy, run) else folder


def config_changes(folder: Path, run: RunConfig) -> list[str]:
    """How the config saved in a run folder differs from `run` ('field: saved -> asked'), beside what training
    fills in itself (the data root it resolves, the checkpoint an adaptation starts from); an unreadable config
    differs in everything."""
    try:
        saved = to_dict(load_config(folder / "config.json"))
    except (TxlError, OSError, ValueError) as e:
        return [f"config.json: {e}"]
    asked = to_dict(run)
    if asked["data"]["root"] is None:
        asked["data"]["root"] = str(cache_root(run.data).resolve())
    for d in (saved, asked):
        d["train"].pop("init_from", None)
        d["model"].pop("vocab_size", None)  # the corpus's, set as training starts
    return differences(saved, asked)
