"""The experiment registry: named families of runs, run side by side and recorded in one results table.

An experiment is a plain function of a scale ("tiny" for tests, "small" for a CPU,
"paper" for the published size) returning an Experiment: a base RunConfig and named
variants. A variant either trains (its own memory plan, ranges, attention, overrides)
or only evaluates another variant's trained model with another plan: an
evaluation-time intervention, the cheapest ablation there is.

The registry knows nothing of its entries: definitions live in the package
`experiments/` and register themselves with `@experiment` when that package is
imported, which the command line (and a test) does.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import logging
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from txl.checkpoint import find_checkpoint
from txl.config import RunConfig, apply_overrides, to_dict
from txl.distributed import launched
from txl.errors import TxlError
from txl.evaluate import EvalSpec, evaluate
from txl.locks import LockedError
from txl.plans import MemoryPlan, apply_plans, check_run
from txl.results import append_result, config_hash, read_results, result_row
from txl.runs import load_trained, prepare_resume
from txl.table import clock
from txl.train import Trainer

log = logging.getLogger(__name__)

SCALES = ("tiny", "small", "paper")


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


# --------------------------------------------------------------------------- running


@dataclass
class Job:
    variant: Variant
    seed: int

    @property
    def key(self) -> str:
        return f"{self.variant.name}/seed{self.seed}"


def jobs(exp: Experiment) -> list[Job]:
    """Training jobs first, each followed by the evaluation jobs that read its model."""
    out = []
    for v in exp.variants:
        if v.trains:
            for seed in exp.seeds:
                out.append(Job(v, seed))
                out += [Job(e, seed) for e in exp.variants if e.of == v.name]
    return out


def shard(all_jobs: list[Job], index: int, count: int) -> list[Job]:
    """Split the jobs between `count` shards by training run, keeping each run's evaluations with it."""
    groups: list[list[Job]] = []
    for job in all_jobs:
        if job.variant.trains:
            groups.append([job])
        else:
            groups[-1].append(job)
    return [job for i, group in enumerate(groups) if i % count == index for job in group]


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


def job_identity(exp: Experiment, job: Job, split: str | None = None) -> dict:
    """Everything that makes a result what it is; its hash decides whether a job is already done. A `split`
    other than the experiment's own (the test split, scored once for reporting) is part of it."""
    if job.variant.adapts:  # its own training config, and the source's it starts from
        ident = {"train": to_dict(exp.config(job.variant, job.seed))}
        ident["from"] = to_dict(exp.config(exp.variant(job.variant.of), job.seed))
    else:
        trained = exp.variant(job.variant.of) if job.variant.of else job.variant
        ident = {"train": to_dict(exp.config(trained, job.seed))}
    if job.variant.of and not job.variant.adapts:
        v = job.variant
        ident["eval"] = {
            "memory": v.memory,
            "attn_range": v.attn_range,
            "tgt_len": v.eval_tgt_len,
            "same_length": v.same_length,
        }
        for name in ("memory_dtype", "sinks", "compress"):  # named only when set: older identities stay the same
            if getattr(v, name) is not None:
                ident["eval"][name] = getattr(v, name)
    if split is not None and split != exp.base.eval.split:
        ident["split"] = split
    return ident


def run_experiment(
    exp: Experiment,
    root: Path,
    shard_spec: tuple[int, int] = (0, 1),
    overrides: list[str] | None = None,
    progress: bool = True,
    split: str | None = None,
) -> list[dict]:
    """Run every job of this shard that has no result yet; return all rows of the results table.

    With a `split` other than the experiment's (`txl run --test`), nothing trains: every variant's trained
    model is scored on that split once, under the variant's own plan, and recorded beside the selection rows."""
    if overrides:
        apply_overrides(exp.base, overrides)
    check_run(exp.base)
    # Under torchrun every process runs the sweep: training jobs are shared (DDP), while evaluation-only
    # jobs, the results table and the messages belong to rank 0.
    main = launched().main  # the messages too are rank 0's: the command line quiets the others
    path = results_path(root, exp)
    done = {(r.variant, r.seed, r.config_hash) for r in read_results(path)}
    todo = shard(jobs(exp), *shard_spec)
    final = split is not None and split != exp.base.eval.split
    digests = [config_hash(job_identity(exp, job, split)) for job in todo]
    pace = _Pace(final)
    held: set[tuple[str, int]] = set()  # (variant, seed) trained by another process right now
    for i, (job, digest) in enumerate(zip(todo, digests), 1):
        if (job.variant.name, job.seed, digest) in done:
            log.info(f"[{i}/{len(todo)}] {exp.name} {job.key}: done already, skipped")
            continue
        pending = [j for j, d in zip(todo[i - 1 :], digests[i - 1 :]) if (j.variant.name, j.seed, d) not in done]
        tag = f"[{i}/{len(todo)}{pace.tag(pending)}] {exp.name} {job.key}"
        start = time.time()
        if (job.variant.of, job.seed) in held:
            log.info(f"{tag}: its model is being trained by another process, skipped")
            continue
        trains = (job.variant.trains or job.variant.adapts) and not final
        if not (trains or main):
            continue
        parts = _do_job(exp, job, root, progress, tag, split, trains)
        if parts is False:
            continue
        if parts is None:
            held.add((job.variant.name, job.seed))
            continue
        pace.add(job, time.time() - start)
        if main:
            append_result(path, _row(exp, job, digest, parts, time.time() - start))
            done.add((job.variant.name, job.seed, digest))
    if held:
        log.info(
            f"{len(held)} training runs were held by another process; "
            "run the same command again when it ends to fill them in"
        )
    elif exp.after is not None and main and shard_spec[1] == 1:
        exp.after(exp, root, split or exp.base.eval.split)  # analyses of the trained models, adding their own rows
    return read_results(path, warn=False)  # its damaged lines were named above


def _do_job(exp: Experiment, job: Job, root: Path, progress: bool, tag: str, split: str | None, trains: bool):
    """Train (or adapt) or evaluate one job: what _row needs; None when another process holds its run folder,
    False when the model it needs is not trained (said)."""
    try:
        if trains:
            return _train_job(exp, job, root, progress, tag)
        return _evaluate_variant(exp, job, root, progress, tag, split)
    except NotTrained as e:
        log.info(f"{tag}: {e}; skipped")
        return False


def _train_job(exp: Experiment, job: Job, root: Path, progress: bool, tag: str) -> tuple | None:
    """Train (or resume) one variant's seed: (metrics, planned model config, segment length, folder, data), or
    None when another process holds its run folder."""
    folder = run_dir(root, exp, job.variant.name, job.seed)
    run = exp.config(job.variant, job.seed)
    resume = find_checkpoint(folder) is not None
    if job.variant.adapts and not resume:  # from the source's trained model
        source = find_checkpoint(_trained_folder(exp, root, job.variant.of, job.seed))
        run.train.init_from = str(source.resolve())
    log.info(f"{tag}: {'resuming' if resume else 'adapting' if job.variant.adapts else 'training'} in {folder}")
    if resume:
        run = prepare_resume(folder, [])
    try:
        again = f"txl run {exp.name} --scale {exp.scale} (the same command: done jobs are skipped, this one resumes)"
        trainer = Trainer(
            run, folder, resume=resume, progress=progress, command=f"txl run {exp.name}", resume_hint=again
        )
    except LockedError as e:
        if launched().world > 1:  # under torchrun every rank must take the same path: stop the sweep
            raise
        log.info(f"{tag}: {e}; skipped")
        return None
    result = trainer.fit()
    spec = EvalSpec.for_run(run)
    return result["final"], spec.plan.apply(run.model), spec.tgt_len, folder, result["data"]


def _row(exp: Experiment, job: Job, digest: str, parts: tuple, seconds: float) -> dict:
    """The results row of a finished job, from what training or evaluating it gave."""
    metrics, model_cfg, tgt_len, folder, data = parts
    v = job.variant
    group = v.group or (exp.variant(v.of).group if v.of else "")
    return result_row(
        exp, v.name, v.kind, job.seed, digest, metrics, model_cfg, tgt_len, folder, data, seconds, of=v.of, group=group
    )


class _Pace:
    """Seconds per job of each kind (train, adapt, eval) so far in this sweep: what is left, estimated."""

    def __init__(self, final: bool):
        self.final, self.started, self.spent = final, time.time(), {}

    def kind(self, job: Job) -> str:
        return "eval" if self.final else job.variant.kind

    def add(self, job: Job, seconds: float) -> None:
        self.spent.setdefault(self.kind(job), []).append(seconds)

    def tag(self, pending: list[Job]) -> str:
        """', 3 min 10 s elapsed, about 12 min left' (nothing before the first job has finished)."""
        if not self.spent:
            return ""
        overall = statistics.fmean(t for times in self.spent.values() for t in times)
        left = sum(statistics.fmean(self.spent.get(self.kind(j), [overall])) for j in pending)
        return f", {clock(time.time() - self.started)} elapsed, about {clock(left)} left"


class NotTrained(TxlError):
    """An evaluation (or adaptation) whose trained model is not there (yet)."""


def _trained_folder(exp: Experiment, root: Path, variant: str, seed: int) -> Path:
    """The run folder of a variant's trained seed; NotTrained when it holds no checkpoint."""
    folder = run_dir(root, exp, variant, seed)
    if find_checkpoint(folder) is None:
        raise NotTrained(f"no trained model in {folder}; run 'txl run {exp.name} --scale {exp.scale}' first")
    return folder


def _evaluate_variant(exp: Experiment, job: Job, root: Path, progress: bool, tag: str, split: str | None = None):
    """Score a trained model: another variant's under this variant's plan, or (for the test split) a training
    variant's own under its run's evaluation settings."""
    v = job.variant
    at_eval = v.of is not None and not v.adapts  # a plan applied to another variant's model
    folder = _trained_folder(exp, root, v.of if at_eval else v.name, job.seed)
    split = split or exp.base.eval.split
    what = f"{v.of}'s model with memory {v.memory or 'as trained'}" if at_eval else "its trained model"
    log.info(f"{tag}: evaluating {what} on the {split} split")
    trained = load_trained(folder, exp.base.train.device)
    spec = trained.spec(split=split, tgt_len=v.eval_tgt_len)
    if at_eval:
        n = trained.run.model.n_layer
        plan = MemoryPlan.parse(n, v.name, same_length=v.same_length, **v.plan_texts())
    else:
        plan = spec.plan
    corpus = trained.corpus(spec, progress=progress)
    metrics = evaluate(trained.model, corpus, spec, plan, progress).to_dict()
    return metrics, plan.apply(trained.run.model), spec.tgt_len, folder, corpus.identity()
