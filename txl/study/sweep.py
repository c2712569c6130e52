"""Running a sweep in this process: an experiment's jobs (one per variant and seed), each trained, adapted or
evaluated unless a results row with its identity is there already, and recorded in the experiment's results table.

`run_experiment` runs a whole sweep (or one shard of it) in order; `run_job` runs one job by its key, which is
what a cluster job does (txl.study.cluster). Both skip finished jobs by the hash of `job_identity`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from txl.config import apply_overrides, differences
from txl.core.distributed import launched
from txl.core.errors import TxlError
from txl.core.io import atomic_write_json
from txl.core.locks import LockedError
from txl.core.table import clock
from txl.evaluation.evaluate import EvalSpec, evaluate
from txl.model.dimensions import at_eval
from txl.model.plans import MemoryPlan, check_run
from txl.study.registry import IDENTITY, Experiment, Variant, results_path, run_dir
from txl.study.results import append_result, config_hash, read_results, result_row
from txl.train.checkpoint import find_checkpoint
from txl.train.loop import Trainer
from txl.train.runs import load_trained, prepare_resume

log = logging.getLogger(__name__)


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


def job_identity(exp: Experiment, job: Job, split: str | None = None) -> dict:
    """Everything that makes a result what it is; its hash decides whether a job is already done: the identity
    of the model it trains or scores (Experiment.identity: configs and a user's text), the plan an evaluation
    applies, and a `split` other than the experiment's own (the test split, scored once for reporting)."""
    v = job.variant
    ident = exp.identity(v if v.adapts or v.trains else exp.variant(v.of), job.seed)
    if v.of and not v.adapts:
        texts = v.plan_texts()
        ident["eval"] = {"tgt_len": v.eval_tgt_len, "same_length": v.same_length}
        for dim in at_eval().values():  # every dimension an evaluation may change (txl.model.dimensions) ...
            if dim.always or texts[dim.flag] is not None:  # ... those added later named when set: old keys stay
                ident["eval"][dim.flag] = texts[dim.flag]
    if split is not None and split != exp.base.eval.split:
        ident["split"] = split
    return ident


def model_in(exp: Experiment, folder: Path, variant: str, seed: int) -> dict:
    """{key: the model a run folder holds (its identity.json), asked: the one `variant`'s seed asks for}, what a
    row records; a folder holding another is refused in one line naming what differs. A folder of an earlier txl
    (no identity.json) was matched by its config in run_dir."""
    asked = json.loads(json.dumps(exp.identity(exp.variant(variant), seed)))
    key = config_hash(asked)
    path = folder / IDENTITY
    if not path.exists():
        return {"key": key, "asked": key}
    try:
        saved = json.loads(path.read_text())
        held, ident = saved["key"], saved["identity"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TxlError(f"{path} is damaged ({e}); remove {folder} to train {variant}/seed{seed} again") from None
    if held != key or ident != asked:
        changed = differences(ident, asked) if isinstance(ident, dict) else ["identity"]
        raise TxlError(
            f"{folder} holds another model than {variant}/seed{seed} asks for ({'; '.join(changed[:4]) or 'key'}); "
            "remove that folder to train it again, or run with the settings it was trained with"
        )
    return {"key": held, "asked": key}


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
    rows = read_results(path)
    done = {(r.variant, r.seed, r.config_hash) for r in rows}
    _say_changed_corpus(exp, path, rows)
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
            f"{len(held)} training runs were held by another process; when it ends, fill them in with: "
            f"{exp.command or f'txl run {exp.name} --scale {exp.scale}'}"
        )
    elif exp.after is not None and main and shard_spec[1] == 1:
        exp.after(exp, root, split or exp.base.eval.split)  # analyses of the trained models, adding their own rows
    return read_results(path, warn=False)  # its damaged lines were named above


def run_job(exp: Experiment, root: Path, key: str, split: str | None = None, progress: bool = False) -> str:
    """Run one job of the sweep by its key (`variant/seedN`), as a cluster job does: train, adapt or evaluate it
    and append its row, unless its row is there already. Returns what happened, in a few words; a job whose
    model is not trained, or whose run folder another process holds, is an error (TxlError)."""
    check_run(exp.base)
    job = next((j for j in jobs(exp) if j.key == key), None)
    if job is None:
        raise TxlError(f"experiment {exp.name} ({exp.scale}) has no job {key!r}; its jobs are named variant/seedN")
    path = results_path(root, exp)
    digest = config_hash(job_identity(exp, job, split))
    if (job.variant.name, job.seed, digest) in {(r.variant, r.seed, r.config_hash) for r in read_results(path)}:
        log.info(f"{exp.name} {key}: done already")
        return "done already"
    final = split is not None and split != exp.base.eval.split
    trains = (job.variant.trains or job.variant.adapts) and not final
    start = time.time()
    if trains:
        parts = _train_job(exp, job, root, progress, f"{exp.name} {key}")
        if parts is None:
            raise TxlError(f"{key}: its run folder is held by another process; submit it again when that ends")
    elif not launched().main:
        return "evaluated by rank 0"
    else:
        parts = _evaluate_variant(exp, job, root, progress, f"{exp.name} {key}", split)
    if launched().main:
        append_result(path, _row(exp, job, digest, parts, time.time() - start))
    return "trained" if trains else "evaluated"


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
    model = model_in(exp, folder, job.variant.name, job.seed)  # never resumes another configuration's model
    if job.variant.adapts and not resume:  # from the source's trained model
        source = find_checkpoint(_trained_folder(exp, root, job.variant.of, job.seed))
        run.train.init_from = str(source.resolve())
    log.info(f"{tag}: {'resuming' if resume else 'adapting' if job.variant.adapts else 'training'} in {folder}")
    if resume:
        run = prepare_resume(folder, [])
    try:
        command = exp.command or f"txl run {exp.name} --scale {exp.scale}"
        again = f"{command} (done jobs are skipped, this one resumes)"
        trainer = Trainer(run, folder, resume=resume, progress=progress, command=command, resume_hint=again)
    except LockedError as e:
        if launched().world > 1:  # under torchrun every rank must take the same path: stop the sweep
            raise
        log.info(f"{tag}: {e}; skipped")
        return None
    if not resume and trainer.dist.main and folder.name != f"seed{job.seed}":  # not an earlier txl's folder
        atomic_write_json(folder / IDENTITY, {"key": model["asked"], "identity": exp.identity(job.variant, job.seed)})
    result = trainer.fit()
    spec = EvalSpec.for_run(run)
    return result["final"], spec.plan.apply(run.model), spec.tgt_len, folder, result["data"], model


def _row(exp: Experiment, job: Job, digest: str, parts: tuple, seconds: float) -> dict:
    """The results row of a finished job, from what training or evaluating it gave."""
    metrics, model_cfg, tgt_len, folder, data, model = parts  # model: what model_in found and checked
    v = job.variant
    group = v.group or (exp.variant(v.of).group if v.of else "")
    row = result_row(
        exp, v.name, v.kind, job.seed, digest, metrics, model_cfg, tgt_len, folder, data, seconds, of=v.of, group=group
    )
    if v.budget_bytes is not None:
        row.budget["limit_bytes"] = v.budget_bytes
    return dataclasses.replace(row, model=model)


def _say_changed_corpus(exp: Experiment, path: Path, rows: list) -> None:
    """One line when the user's text the sweep reads is not the one its rows were measured on."""
    now = exp.content(exp.base.data)
    before = [r for r in rows if r.data and r.data.get("content") not in (None, now)]
    if now is not None and before:
        was = ", ".join(sorted({r.data["content"] for r in before}))
        log.warning(
            f"corpus {exp.base.data.corpus} changed since {len(before)} rows of {path} were measured on it "
            f"(content {was}, now {now}): its jobs run again on the text as it is now"
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
        """', 3 min 10 s elapsed, about 12 min left': each pending job at the mean time of its kind so far (train,
        adapt, eval), and those of a kind not yet timed counted, not guessed (nothing before the first job ends)."""
        if not self.spent:
            return ""
        timed = [j for j in pending if self.kind(j) in self.spent]
        left = sum(statistics.fmean(self.spent[self.kind(j)]) for j in timed)
        untimed = len(pending) - len(timed)
        more = f" and {untimed} jobs of a kind not yet timed" if untimed else ""
        return f", {clock(time.time() - self.started)} elapsed, about {clock(left)} left{more}"


class NotTrained(TxlError):
    """An evaluation (or adaptation) whose trained model is not there (yet)."""


def _trained_folder(exp: Experiment, root: Path, variant: str, seed: int) -> Path:
    """The run folder of a variant's trained seed; NotTrained when it holds no checkpoint."""
    folder = run_dir(root, exp, variant, seed)
    if find_checkpoint(folder) is None:
        raise NotTrained(f"no trained model in {folder}; run 'txl run {exp.name} --scale {exp.scale}' first")
    model_in(exp, folder, variant, seed)
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
    model = model_in(exp, folder, v.of if at_eval else v.name, job.seed)
    return metrics, plan.apply(trained.run.model), spec.tgt_len, folder, corpus.identity(), model
