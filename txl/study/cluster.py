"""Sweeps as jobs: every (variant, seed) of an experiment submitted through submitit, to Slurm or as local processes.

A sweep's jobs live beside its results, in RESULTS/NAME/SCALE/jobs/: one folder per job (submitit's:
the submission script, the pickled call, the log `ID_0_log.err` and `ID_0_log.out`, and the pickled outcome)
and `submitted.jsonl`, one line per submission (the job's key, its identity hash, the job id, the launcher,
the log paths). A second `txl run` reads it to submit nothing twice: a job whose row is in the results table
is done; one whose recorded submission is queued or running is left alone; anything else is submitted again
and resumes from its checkpoint (a training run's resume is exact). `txl status` reads the same records.

A training job is one submission (training variants together as a job array); an evaluation or adaptation
depends on the training job whose model it reads; the experiment's `after` analyses depend on every job of
the sweep. Each job runs `txl.study.sweep.run_job`, so its row is the row the in-process runner would write.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from txl.config import apply_overrides
from txl.core.errors import TxlError
from txl.core.io import append_line, atomic_write_json, read_jsonl
from txl.study.registry import Experiment, get_experiment, results_path, retarget
from txl.study.results import config_hash
from txl.study.sweep import Job, job_identity, jobs

log = logging.getLogger(__name__)

AFTER = "after"  # the key of the job that runs an experiment's after-sweep analyses
DEFAULT_MINUTES = {
    "tiny": 30,
    "small": 240,
    "medium": 480,
    "paper": 2880,
}  # a job's time limit when --time is not given
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}
ACTIVE |= {"RESIZING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"}
INSTALL = "--launcher slurm|local needs submitit: pip install -e '.[cluster]' (or pip install submitit)"
# sbatch options txl (or submitit) sets itself: its dependencies, signals for requeueing, array and log paths
RESERVED = {"dependency", "signal", "array", "output", "error", "open_mode", "kill_on_invalid_dep", "wckey"}
MAX_ARRAY = 1000  # tasks per job array (Slurm's default MaxArraySize is 1001)
MAX_TIMEOUTS = 20  # how often submitit requeues a job that reached its time limit


@dataclass
class Resources:
    """What each job asks for. GPUs are the job's in all, spread evenly over its nodes; a training job with
    several runs txl's DDP inside, one task per GPU; evaluations ask for one node and at most one GPU."""

    partition: str | None = None
    gpus_per_job: int = 0
    nodes: int = 1
    minutes: int | None = None  # None: the scale's default (DEFAULT_MINUTES)
    account: str | None = None
    cpus_per_job: int | None = None
    extra: dict[str, str] = field(default_factory=dict)  # further sbatch options, --slurm KEY=VALUE
    parallel: int = 2  # local launcher: jobs running at once

    def check(self) -> Resources:
        if self.nodes < 1 or self.gpus_per_job < 0 or (self.minutes is not None and self.minutes < 1):
            raise TxlError("--nodes and --time must be >= 1 and --gpus-per-job >= 0")
        if self.gpus_per_job % self.nodes:
            raise TxlError(f"--gpus-per-job {self.gpus_per_job} does not spread evenly over --nodes {self.nodes}")
        if self.parallel < 1 or (self.cpus_per_job is not None and self.cpus_per_job < 1):
            raise TxlError("--parallel and --cpus-per-job must be >= 1")
        taken = sorted(RESERVED & set(self.extra))
        if taken:
            raise TxlError(f"--slurm {taken[0]}=... is set by txl (dependencies, requeue signals, arrays, logs)")
        return self

    def slurm(self, scale: str, trains: bool) -> dict:
        """SlurmExecutor parameters for a training job (trains) or an evaluation."""
        nodes = self.nodes if trains else 1
        gpus = self.gpus_per_job // self.nodes if trains else min(self.gpus_per_job, 1)
        out = {"time": self.minutes or DEFAULT_MINUTES[scale], "nodes": nodes, "ntasks_per_node": max(gpus, 1)}
        out |= {"gpus_per_node": gpus} if gpus else {}
        for key, value in (("partition", self.partition), ("account", self.account)):
            if value:
                out[key] = value
        if self.cpus_per_job:
            out["cpus_per_task"] = self.cpus_per_job
        # a job whose dependency failed or was cancelled leaves the queue (a second txl run submits it again)
        out["additional_parameters"] = {"kill_on_invalid_dep": "yes", **self.extra}
        return out


@dataclass
class Sweep:
    """What a job needs to rebuild its experiment in another process: names and flags, not objects. `setup`
    (e.g. registering the experiment definitions) runs first there."""

    name: str
    scale: str
    root: str
    corpus: str | None = None
    tokenizer: str | None = None
    seeds: list[int] | None = None
    overrides: list[str] = field(default_factory=list)
    setup: Callable[[], None] | None = None
    launcher: tuple[str, ...] = ()  # the launcher flags as given (--launcher slurm --partition ...), for hints
    test: bool = False
    vocab_size: int | None = None

    def command(self, launcher: bool = True) -> str:
        """The txl run command that gives this sweep's rows (done jobs are skipped, the others run or resume):
        every flag that makes them what they are, and (with `launcher`) how its jobs were launched."""
        parts = ["txl", "run", self.name, "--scale", self.scale, "--results", self.root]
        parts += ["--corpus", self.corpus] if self.corpus else []
        parts += ["--tokenizer", self.tokenizer] if self.tokenizer else []
        parts += ["--vocab-size", str(self.vocab_size)] if self.vocab_size else []
        if self.seeds is not None:  # txl run --seeds N gives 0..N-1
            parts += ["--seeds", str(len(self.seeds))]
        for o in self.overrides:
            parts += ["--set", o]
        parts += ["--test"] if self.test else []
        return shlex.join(parts + (list(self.launcher) if launcher else []))

    def status_command(self) -> str:
        """The txl status command that shows this sweep's jobs."""
        parts = ["txl", "status", self.name, "--scale", self.scale, "--results", self.root]
        parts += ["--corpus", self.corpus] if self.corpus else []
        parts += ["--tokenizer", self.tokenizer] if self.tokenizer else []
        return shlex.join(parts + (["--vocab-size", str(self.vocab_size)] if self.vocab_size else []))

    def experiment(self) -> Experiment:
        if self.setup is not None:
            self.setup()
        exp = retarget(get_experiment(self.name, self.scale), self.corpus, self.tokenizer, self.vocab_size)
        if self.seeds is not None:
            exp.seeds = list(self.seeds)
        if self.overrides:
            apply_overrides(exp.base, self.overrides)
        exp.command = self.command()
        return exp


@dataclass
class Task:
    """One job of the sweep as submitted: its key (`variant/seedN`, `variant/seedN@test` on another split,
    `after`), the sweep job it runs (None for `after`), the split it scores (None: the experiment's own), the
    hash that says it is done, whether it trains, and the keys of the jobs whose models it needs."""

    key: str
    job: Job | None
    split: str | None
    digest: str
    trains: bool
    needs: list[str]

    @property
    def kind(self) -> str:
        if self.job is None:
            return "after"
        return "test" if self.split else self.job.variant.kind


def tasks(exp: Experiment, test: bool = False) -> list[Task]:
    """Every job of the sweep in an order where each comes after the jobs it needs; with `test`, then each
    variant scored on the test split; the `after` analyses last, once per split, when the experiment has them."""
    out: list[Task] = []
    for split in [None, "test"] if test and exp.base.eval.split != "test" else [None]:
        final = split is not None and split != exp.base.eval.split
        mine = []
        for job in jobs(exp):
            v, digest = job.variant, config_hash(job_identity(exp, job, split))
            if final:  # scores a trained (or adapted) model: its own, or for a plan at evaluation its source's
                source = v.of if v.kind == "eval" else v.name
                mine.append(Task(f"{job.key}@{split}", job, split, digest, False, [f"{source}/seed{job.seed}"]))
            else:
                needs = [] if v.trains else [f"{v.of}/seed{job.seed}"]
                mine.append(Task(job.key, job, None, digest, v.kind != "eval", needs))
        if exp.after is not None:  # on another split, after the first split's analyses too (it reads their files)
            needs = [t.key for t in mine] + ([AFTER] if split else [])
            digest = config_hash(sorted(t.digest for t in mine) + [t.digest for t in out if t.key == AFTER])
            # resources of a training job: an experiment's analyses may train (analysis/plan-search does)
            mine.append(Task(AFTER + (f"@{split}" if split else ""), None, split, digest, True, needs))
        out += mine
    return out


def jobs_folder(root: Path, exp: Experiment) -> Path:
    return results_path(root, exp).parent / "jobs"


# --------------------------------------------------------------------------- the job itself


class SweepJob:
    """The callable a job runs: one task of a sweep. On a time limit or preemption submitit asks it for
    `checkpoint` and requeues the job, which then resumes from the run's last checkpoint."""

    def __init__(self, sweep: Sweep, key: str | None, split: str | None, threads: int | None = None):
        self.sweep, self.key, self.split = sweep, key, split  # key: the sweep job's (None: the after analyses)
        self.threads = threads  # CPU threads (a local job's --cpus-per-job); None: torch's own choice

    def __call__(self) -> str:
        from txl.core.distributed import finish_distributed
        from txl.core.log import setup
        from txl.study.sweep import run_job

        setup(logging.INFO)
        threads = getattr(self, "threads", None)  # a job pickled before threads were kept has none
        if threads:  # jobs side by side on one machine share its cores instead of each taking all of them
            import torch

            os.environ["OMP_NUM_THREADS"] = str(threads)  # for any process the job starts
            torch.set_num_threads(threads)
        _distributed_from_slurm()
        exp = self.sweep.experiment()
        root = Path(self.sweep.root)
        if self.key is None:
            exp.after(exp, root, self.split or exp.base.eval.split)
            return "analysed"
        ok = False
        try:
            outcome = run_job(exp, root, self.key, self.split)
            ok = True
        except KeyboardInterrupt:  # cancelled (SIGTERM) or Ctrl-C: training saved and said so; the log ends there
            print(f"{self.key}: stopped; its next submission resumes it", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        finally:
            finish_distributed(ok)
        return outcome

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(
            SweepJob(self.sweep, self.key, self.split, getattr(self, "threads", None))
        )


def _distributed_from_slurm() -> None:
    """A job of several tasks: torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR ...) set from Slurm's, so
    txl.core.distributed joins the tasks into one DDP run."""
    import submitit

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (a test calling the job directly)
        return
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


# --------------------------------------------------------------------------- records and states


def remember(folder: Path, sweep: Sweep, test: bool) -> None:
    """Write down the sweep as submitted (jobs/sweep.json), so `txl status` needs only its name and data."""
    atomic_write_json(folder / "sweep.json", {"seeds": sweep.seeds, "overrides": sweep.overrides, "test": test})


def recall(folder: Path, sweep: Sweep) -> tuple[Sweep, bool] | None:
    """The sweep as last submitted to this folder (its seeds, overrides, test split), or None (never, or a file
    that is not what `remember` writes)."""
    try:
        saved = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    seeds, overrides = saved.get("seeds") if isinstance(saved, dict) else None, None
    if isinstance(saved, dict) and isinstance(saved.get("overrides"), list):
        overrides = [o for o in saved["overrides"] if isinstance(o, str)]
    if overrides is None or not (seeds is None or (isinstance(seeds, list) and all(type(x) is int for x in seeds))):
        return None
    return replace(sweep, seeds=seeds, overrides=overrides), saved.get("test") is True


def read_records(folder: Path) -> dict[str, dict]:
    """The latest submission of each key, from jobs/submitted.jsonl; a line that is not a whole record (torn by a
    crash, or edited) is named and set aside, and its job counts as not submitted."""
    path = folder / "submitted.jsonl"
    latest: dict[str, dict] = {}
    if not path.exists():
        return latest
    bad = lambda line, why: log.warning(f"{path}: line {line} {why}; set aside (submit that job again)")  # noqa: E731
    for line, row in read_jsonl(path, on_bad=bad, numbered=True):
        problem = _record_problem(row)
        if problem is None:
            latest[row["key"]] = row
        else:
            bad(line, problem)
    return latest


RECORD_TEXT = ("key", "digest", "job_id", "launcher", "log", "out", "result")  # what record_submission writes


def _record_problem(row) -> str | None:
    """Why a line of submitted.jsonl is not a job record txl can follow, or None."""
    if not isinstance(row, dict):
        return "is not a JSON object"
    for name in RECORD_TEXT:
        if not isinstance(row.get(name), str):
            return f"has {name} = {str(row.get(name))[:40]!r}, not text"
    if row["launcher"] not in ("slurm", "local"):
        return f"has launcher {row['launcher'][:20]!r}, not slurm or local"
    if not isinstance(row.get("started"), str | None):
        return "has a start time that is not text"
    return None


def record_submission(folder: Path, task: Task, job, launcher: str) -> dict:
    row = {"key": task.key, "digest": task.digest, "job_id": str(job.job_id), "launcher": launcher}
    row |= {"submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "log": str(job.paths.stderr)}
    row |= {"out": str(job.paths.stdout), "result": str(job.paths.result_pickle)}
    if launcher == "local":  # a process id is reused once the process ends: its start time tells them apart
        row["started"] = _started(row["job_id"])
    append_line(folder / "submitted.jsonl", json.dumps(row))
    return row


def slurm_states(strict: bool = True) -> dict[str, tuple[str, str]]:
    """Slurm's state and reason of each job it still knows (finished ones for MinJobAge), whoever submitted it
    (a results folder may be shared). Without an answer from Slurm: an error when `strict` (a submission must
    not guess), else a warning and nothing known (`txl status` then reads the jobs' outcome files)."""
    command = ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
        why = None if out.returncode == 0 else (out.stderr.strip().splitlines() or ["no message"])[-1]
    except (OSError, subprocess.TimeoutExpired) as e:
        out, why = None, str(e)
    if why is not None:
        if strict:
            raise TxlError(f"cannot ask Slurm for job states (squeue: {why}); is this a machine of the cluster?")
        log.warning(f"cannot ask Slurm for job states (squeue: {why}); states below are from the jobs' files")
        return {}
    states = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def state_of(record: dict, queue: dict[str, tuple[str, str]] | None) -> tuple[str, str]:
    """(state, detail) of a recorded job: Slurm's state while Slurm knows it (`queue`; None for local jobs,
    whose process is looked at), else what its outcome file says: COMPLETED, FAILED with the error's last
    line, or LOST (killed or cancelled before it wrote one)."""
    job_id = record["job_id"]
    if queue is not None and job_id in queue:
        state, reason = queue[job_id]
        if state in ACTIVE or state not in {"COMPLETED", "FAILED"}:
            return state, "" if reason in ("None", "") else reason
    if queue is None and _process_alive(job_id, record.get("started")):
        return "RUNNING", ""
    outcome = _outcome(Path(record["result"]))
    if outcome is None:
        if queue is not None and job_id in queue:
            return queue[job_id][0], ""
        return "LOST", "killed or cancelled before it finished"
    ok, value = outcome
    return ("COMPLETED", "") if ok else ("FAILED", value)


def _outcome(path: Path) -> tuple[bool, str] | None:
    try:
        with open(path, "rb") as f:
            kind, value = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:
        return False, f"its outcome file {path} is damaged"
    if kind == "success":
        return True, str(value)
    lines = [line for line in str(value).strip().splitlines() if line.strip()]
    return False, lines[-1].strip() if lines else "failed"


def _started(pid: str) -> str | None:
    """When a process started (clock ticks since boot, from /proc), or None where that cannot be read."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _process_alive(pid: str, started: str | None) -> bool:
    """Whether the local job's process still runs: that id, started when it was recorded, running submitit."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            ours = b"submitit" in f.read()
    except (OSError, ValueError):
        return False
    return ours and (started is None or _started(pid) == started)


def active(state: str, detail: str) -> bool:
    """Queued or running, and able to run: a job held on a dependency that can never be met is not."""
    return state in ACTIVE and "DependencyNeverSatisfied" not in detail
