"""`txl run --launcher slurm|local` and `txl status`: what a sweep still needs, submitted once, and each job's state.

See txl.study.cluster for the records a sweep's jobs leave and how a job runs. Slurm jobs are submitted and left
to the queue (`wait` follows them to the end); local jobs run here as parallel processes, each started once
the jobs it needs have finished.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from txl.core.errors import TxlError
from txl.core.locks import FolderLock
from txl.core.table import clock
from txl.model.plans import check_run
from txl.study.cluster import (
    DEFAULT_MINUTES,
    INSTALL,
    MAX_ARRAY,
    MAX_TIMEOUTS,
    Resources,
    Sweep,
    SweepJob,
    Task,
    active,
    jobs_folder,
    read_records,
    recall,
    record_submission,
    remember,
    slurm_states,
    state_of,
    tasks,
)
from txl.study.registry import Experiment, results_path
from txl.study.results import read_results

log = logging.getLogger(__name__)


@dataclass
class JobStatus:
    """One job of a sweep as `txl status` shows it."""

    key: str
    kind: str  # train, adapt, eval, test (a variant scored on the test split) or after
    state: str  # done, not submitted, or the job's: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, LOST ...
    job_id: str = ""
    detail: str = ""  # why it waits, or a failed job's last error line
    log: str = ""

    @property
    def needs_submitting(self) -> bool:
        return self.state != "done" and not active(self.state, self.detail)


def survey(exp: Experiment, root: Path, test: bool = False, strict: bool = True) -> list[tuple[Task, JobStatus]]:
    """Each task of the sweep with its status: done (its row is in the results table; for `after`, its job
    completed), or its latest submission's state, or not submitted (`strict`: see cluster.slurm_states)."""
    folder = jobs_folder(root, exp)
    records = read_records(folder)
    rows = {(r.variant, r.seed, r.config_hash) for r in read_results(results_path(root, exp), warn=False)}
    mine = [r for r in records.values() if r.get("launcher") == "slurm"]
    queue = slurm_states(strict) if mine else {}
    out = []
    for task in tasks(exp, test):
        status = JobStatus(task.key, task.kind, "not submitted")
        record = records.get(task.key)
        if record is not None and record.get("digest") == task.digest:
            state, detail = state_of(record, queue if record.get("launcher") == "slurm" else None)
            status = JobStatus(task.key, task.kind, state, record["job_id"], detail, record.get("log", ""))
        if task.job is not None and (task.job.variant.name, task.job.seed, task.digest) in rows:
            status.state, status.detail = "done", ""
        elif task.job is None and status.state == "COMPLETED":
            status.state = "done"
        out.append((task, status))
    return out


def status(sweep: Sweep) -> tuple[list[JobStatus], Sweep, bool]:
    """Each job's status in the sweep as last submitted to its folder (its seeds, overrides and test split; the
    experiment's own when nothing was submitted), with that sweep and whether it scores the test split."""
    folder = jobs_folder(Path(sweep.root), sweep.experiment())
    sweep, test = recall(folder, sweep) or (sweep, False)
    try:
        exp = sweep.experiment()
        check_run(exp.base)
    except TxlError as e:
        raise TxlError(f"{folder / 'sweep.json'} (as last submitted): {e}; remove it, or submit anew") from None
    return [s for _, s in survey(exp, Path(sweep.root), test, strict=False)], sweep, test


def launch(sweep: Sweep, launcher: str, resources: Resources, test: bool = False, wait: bool = False) -> list:
    """Submit what the sweep still needs (nothing that is done, queued or running); with the local launcher, or
    `wait`, follow the jobs to their end. Returns the statuses of the jobs this call submitted."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise TxlError(INSTALL) from None
    logging.getLogger("submitit").setLevel(logging.ERROR)  # its state queries need accounting; txl asks squeue
    resources.check()
    exp = sweep.experiment()
    check_run(exp.base)
    root = Path(sweep.root)
    folder = jobs_folder(root, exp)
    with FolderLock(folder):  # one submitter at a time: a second `txl run` is refused, not doubled
        seen = survey(exp, root, test)
        remember(folder, sweep, test)
        ids = {s.key: s.job_id for _, s in seen if s.job_id and active(s.state, s.detail)}
        todo = [t for t, s in seen if s.needs_submitting]
        for _, s in seen:
            if s.key in ids:
                log.info(f"{exp.name} {s.key}: {s.state.lower()} as job {s.job_id}, not submitted again")
        if launcher == "local" and ids and todo:  # it could not wait for them: what needs them would fail
            raise TxlError(
                f"{len(ids)} jobs of this sweep are queued or running already ({', '.join(list(ids)[:3])}); "
                f"wait for them ('txl status {exp.name} --scale {exp.scale}'), then run this again"
            )
        if not todo:
            log.info(f"{exp.name}: nothing to submit ({len(seen)} jobs done, queued or running)")
            submitted = []
        elif launcher == "local":
            return _run_local(exp, sweep, resources, todo, folder)
        else:
            submitted = _submit_slurm(exp, sweep, resources, todo, ids, folder)
    if wait:
        follow(exp, root, [s.key for s in submitted] + list(ids), test)
    return submitted


def _levels(todo: list[Task]) -> list[list[Task]]:
    """The tasks in rounds: each round needs only jobs of earlier rounds (or jobs not being submitted)."""
    keys = {t.key for t in todo}
    level: dict[str, int] = {}
    for t in todo:  # tasks() orders each task after the tasks it needs
        level[t.key] = 1 + max((level[n] for n in t.needs if n in keys), default=-1)
    return [[t for t in todo if level[t.key] == i] for i in range(max(level.values()) + 1)]


def _submit_slurm(exp, sweep: Sweep, resources: Resources, todo: list[Task], ids: dict, folder: Path) -> list:
    """Submit the tasks round by round, each depending (afterok) on the queued jobs it needs; tasks of one round
    with the same resources and dependencies go as one job array (of at most MAX_ARRAY tasks)."""
    out = []
    for round_ in _levels(todo):
        groups: dict[tuple, list[Task]] = {}
        for t in round_:
            deps = tuple(sorted({ids[n] for n in t.needs if n in ids}))
            groups.setdefault((t.trains, deps), []).append(t)
        for (trains, deps), whole in groups.items():
            for group in (whole[i : i + MAX_ARRAY] for i in range(0, len(whole), MAX_ARRAY)):
                out += _submit_array(exp, sweep, resources, group, trains, deps, ids, folder)
    return out


def _submit_array(exp, sweep: Sweep, resources: Resources, group: list[Task], trains, deps, ids, folder) -> list:
    """One sbatch of these tasks (a job array when there are several), each recorded as it was submitted."""
    import submitit

    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=MAX_TIMEOUTS)
    params = resources.slurm(exp.scale, trains)
    if deps:
        params["dependency"] = "afterok:" + ":".join(deps)
    executor.update_parameters(job_name=f"txl-{exp.name}", **params)
    try:
        with executor.batch():
            jobs = [executor.submit(SweepJob(sweep, t.job and t.job.key, t.split)) for t in group]
    except Exception as e:  # sbatch's refusal (a partition, an option) comes as submitit's error
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise TxlError(f"sbatch refused the jobs: {lines[-1] if lines else e}") from None
    out = []
    for t, job in zip(group, jobs):
        row = record_submission(folder, t, job, "slurm")
        ids[t.key] = row["job_id"]
        out.append(_submitted(t, row))
        log.info(f"{exp.name} {t.key}: submitted as job {row['job_id']}; log {row['log']}")
    return out


def _submitted(task: Task, row: dict) -> JobStatus:
    return JobStatus(task.key, task.kind, "PENDING", row["job_id"], "", row["log"])


def follow(exp: Experiment, root: Path, keys: list[str], test: bool = False, poll: float = 2.0) -> None:
    """Wait until none of these jobs is queued or running, saying each change of state; a failed one is an
    error naming them and their logs."""
    last: dict[str, str] = {}
    while True:
        now = {s.key: s for _, s in survey(exp, root, test) if s.key in keys}
        for key, s in now.items():
            if last.get(key) != s.state:
                log.info(f"{exp.name} {key}: {s.state.lower()}" + (f" ({s.detail})" if s.detail else ""))
        last = {k: s.state for k, s in now.items()}
        if not any(active(s.state, s.detail) for s in now.values()):
            break
        time.sleep(poll)
        poll = min(poll * 1.2, 30.0)  # a long sweep asks Slurm every half minute, not every two seconds
    _raise_failed(exp, [s for s in now.values() if s.state != "done"])


def _raise_failed(exp: Experiment, bad: list[JobStatus]) -> None:
    if not bad:
        return
    first = bad[0]
    raise TxlError(
        f"{len(bad)} job(s) of {exp.name} did not finish ({', '.join(s.key for s in bad[:4])}"
        f"{', ...' if len(bad) > 4 else ''}); {first.key}: {first.state.lower()}"
        f"{': ' + first.detail if first.detail else ''}; log {first.log}. See 'txl status {exp.name} --scale "
        f"{exp.scale}', then run {exp.command or 'the same command'} again (done jobs are skipped, killed ones resume)"
    )


def _run_local(exp, sweep: Sweep, resources: Resources, todo: list[Task], folder: Path) -> list:
    """Run the tasks as local processes, at most `resources.parallel` at once, each once those it needs are
    done and the GPUs it needs are free (each job its own: a training job --gpus-per-job or one, an evaluation
    one; none on a machine without); a task whose needed job failed is not started."""
    import submitit

    executor = submitit.LocalExecutor(folder=folder / "%j")
    free = _local_gpus()
    with_gpus = bool(free)
    if with_gpus and max(resources.gpus_per_job, 1) > len(free):
        raise TxlError(f"--gpus-per-job {resources.gpus_per_job}: this machine shows {len(free)} GPUs")
    pending, running, out, failed = list(todo), {}, [], []
    threads = local_threads(resources)
    start = time.time()
    terminated = _terminate_as_interrupt()  # a SIGTERM (kill, a scheduler) stops the jobs as Ctrl-C does
    try:
        while pending or running:
            for key, (task, job, row, gpus) in list(running.items()):
                if job.done():
                    del running[key]
                    free += gpus
                    failed += _finished_local(exp, task, row)
            blocked = {t.key for t in pending} | set(running) | {s.key for s in failed}
            for task in list(pending):
                want = (max(resources.gpus_per_job, 1) if task.trains else 1) if with_gpus else 0
                if any(n in {s.key for s in failed} for n in task.needs):
                    pending.remove(task)
                    failed.append(JobStatus(task.key, task.kind, "not started", detail="a job it needs failed"))
                elif len(running) < resources.parallel and not blocked & set(task.needs) and want <= len(free):
                    pending.remove(task)
                    gpus, free = free[:want], free[want:]
                    minutes = resources.minutes or DEFAULT_MINUTES[exp.scale]
                    tasks = max(len(gpus), 1) if task.trains else 1  # DDP over a training job's GPUs
                    executor.update_parameters(
                        timeout_min=minutes, tasks_per_node=tasks, gpus_per_node=len(gpus), visible_gpus=gpus
                    )
                    job = _start_local(executor, SweepJob(sweep, task.job and task.job.key, task.split, threads))
                    row = record_submission(folder, task, job, "local")
                    running[task.key] = (task, job, row, gpus)
                    out.append(_submitted(task, row))
                    log.info(f"{exp.name} {task.key}: started (process {row['job_id']}); log {row['log']}")
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop_local([job for _, job, _, _ in running.values()])
        raise
    finally:
        if terminated is not None:
            signal.signal(signal.SIGTERM, terminated)
        _remove_if_empty(folder / "%j")  # where submitit writes a job before it has its id
    log.info(f"{exp.name}: {len(out)} local jobs in {clock(time.time() - start)}")
    _raise_failed(exp, failed)
    return out


def local_threads(resources: Resources) -> int:
    """Each local job's CPU threads: --cpus-per-job, else the cores this process may use shared among the jobs
    that run at once. Without a limit every job's torch takes every core, and two jobs on two cores then run
    four threads that wait on each other: a medium training took 1.0 to 2.2 s a step so, 0.2 s with one thread each."""
    import os

    if resources.cpus_per_job:
        return resources.cpus_per_job
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // resources.parallel)


def _terminate_as_interrupt():
    """SIGTERM raises KeyboardInterrupt in the main thread (so the running jobs are stopped and waited for, not left
    training on their own); the previous handler, or None off the main thread."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals are the main thread's
        return None


def _start_local(executor, job: SweepJob):
    """Submit a local job whose controller ignores the terminal's Ctrl-C (SIGINT ignored is inherited): txl alone
    answers it, by asking each job to stop (_stop_local), so no controller prints a traceback on the terminal."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return executor.submit(job)
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_local(jobs: list, seconds: float = 120) -> None:
    """Ask running local jobs to stop (SIGTERM, which each controller passes on: training stops after its step and
    saves), and wait for them to end, a second Ctrl-C ignored meanwhile, so what they write is whole on return."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        processes = [p for p in (getattr(job, "_process", None) for job in jobs) if p is not None]
        for p in processes:
            p.send_signal(signal.SIGTERM)
        deadline = time.time() + seconds
        for p in processes:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
    finally:
        signal.signal(signal.SIGINT, previous)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not there, or not empty
        pass


def _local_gpus() -> list[int]:
    """The GPUs local jobs may use: those CUDA_VISIBLE_DEVICES names, else every GPU torch sees."""
    import os

    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        return [int(v) for v in named.split(",") if v.strip().isdigit()]
    import torch

    return list(range(torch.cuda.device_count()))


def _finished_local(exp, task: Task, row: dict) -> list[JobStatus]:
    state, detail = state_of(row, None)
    if state == "COMPLETED":
        log.info(f"{exp.name} {task.key}: done")
        return []
    log.warning(f"{exp.name} {task.key}: {state.lower()}: {detail}; log {row['log']}")
    return [JobStatus(task.key, task.kind, state, row["job_id"], detail, row["log"])]
