"""Sweeps as jobs (txl.study.cluster, txl.study.launch): the tasks and what each needs, job records and states,
resources, and the local launcher against the in-process runner. The real Slurm is tested in test_slurm.py."""

import json
import os
import pickle
import sys
from pathlib import Path

import pytest

import experiments  # noqa: F401  (registers every definition)
from txl.cli import main
from txl.core.errors import TxlError
from txl.study.cluster import Resources, Sweep, recall, remember, state_of, tasks
from txl.study.registry import Experiment, Variant, get_experiment, results_path
from txl.study.results import read_results
from txl.train.presets import get_preset


def _exp(after=None) -> Experiment:
    variants = [
        Variant("long", memory="8"),
        Variant("cut", of="long", memory="2"),
        Variant("tuned", of="long", memory="2", adapt_steps=2),
        Variant("short", memory="2"),
    ]
    return Experiment("tiny", get_preset("tiny"), variants, seeds=[0, 1], after=after, name="t/x")


def test_each_task_needs_the_training_job_whose_model_it_reads():
    by_key = {t.key: t for t in tasks(_exp(after=lambda *a: None), test=True)}
    assert by_key["long/seed1"].needs == [] and by_key["long/seed1"].trains
    assert by_key["cut/seed1"].needs == ["long/seed1"] and not by_key["cut/seed1"].trains
    assert by_key["tuned/seed0"].needs == ["long/seed0"] and by_key["tuned/seed0"].trains  # adapting trains
    # on the test split every job only scores: a plan at evaluation reads its source's model, an adapted one its own
    assert by_key["cut/seed0@test"].needs == ["long/seed0"] and by_key["tuned/seed0@test"].needs == ["tuned/seed0"]
    assert by_key["short/seed0@test"].needs == ["short/seed0"] and not by_key["short/seed0@test"].trains
    assert [t.kind for t in by_key.values()].count("test") == 8
    after = by_key["after"]
    assert sorted(after.needs) == sorted(k for k in by_key if "@" not in k and k != "after")
    # the test split's analyses read the files the valid split's wrote: they come after them
    assert set(by_key["after@test"].needs) == {k for k in by_key if k.endswith("@test") and k != "after@test"} | {
        "after"
    }
    assert by_key["after"].trains  # an experiment's analyses may train: they get a training job's resources
    order = list(by_key)
    assert all(order.index(n) < order.index(k) for k, t in by_key.items() for n in t.needs)
    assert len({t.digest for t in by_key.values()}) == len(by_key)  # the test split is part of a job's identity


def test_an_experiment_scored_on_test_already_has_no_second_test_pass():
    exp = _exp()
    exp.base.eval.split = "test"
    keys = [t.key for t in tasks(exp, test=True)]
    assert len(keys) == len(set(keys)) == 8


class _FakeJob:
    def __init__(self, job_id: str, folder):
        from submitit.core.utils import JobPaths

        self.job_id, self.paths = job_id, JobPaths(folder, job_id=job_id)


class _FakeSlurm:
    """submitit.SlurmExecutor as sbatch would answer: ids counting up, arrays as ID_INDEX; what it was asked kept."""

    calls: list = []
    next_id = [100]

    def __init__(self, folder, max_num_timeout=3):
        self.folder, self.params, self.jobs, self.batching = folder, {}, [], False

    def update_parameters(self, **params):
        self.params.update(params)

    def batch(self):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            self.batching, self.jobs = True, []
            yield
            base = self.next_id[0]
            self.next_id[0] += 1
            many = len(self.jobs) > 1
            for i, job in enumerate(self.jobs):
                job.job_id = f"{base}_{i}" if many else str(base)
            type(self).calls.append((dict(self.params), [j.job_id for j in self.jobs]))

        return ctx()

    def submit(self, fn):
        job = _FakeJob("?", self.folder)
        self.jobs.append(job)
        return job


def test_training_runs_go_as_one_array_and_each_evaluation_after_the_training_it_reads(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from txl.study import launch

    monkeypatch.setattr(submitit, "SlurmExecutor", _FakeSlurm)
    monkeypatch.setattr(launch, "MAX_ARRAY", 3)
    _FakeSlurm.calls.clear()
    exp = _exp(after=lambda *a: None)
    todo = tasks(exp)
    ids = {"long/seed1": "7"}  # queued already: what needs it depends on that job
    todo = [t for t in todo if t.key != "long/seed1"]
    sweep = Sweep("t/x", "tiny", str(tmp_path))
    out = launch._submit_slurm(exp, sweep, Resources(), todo, ids, tmp_path)
    assert len(out) == len(todo) and all(t.key in ids for t in todo)
    calls = _FakeSlurm.calls
    first = calls[0]
    assert "dependency" not in first[0] and len(first[1]) == 3  # long/seed0, short/seed0, short/seed1: an array
    by_key = {t.key: ids[t.key] for t in todo} | {"long/seed1": "7"}
    for params, job_ids in calls[1:]:
        dep = params.get("dependency", "")
        for job_id in job_ids:
            key = next(k for k, v in by_key.items() if v == job_id)
            task = next(t for t in todo if t.key == key)
            assert dep == "afterok:" + ":".join(sorted(by_key[n] for n in task.needs)), key
    assert max(len(job_ids) for _, job_ids in calls) <= 3  # arrays are cut at MAX_ARRAY
    records = [json.loads(line) for line in (tmp_path / "submitted.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records] == [t.key for t in out] and records[-1]["key"] == "after"


def test_resources_become_slurm_parameters():
    r = Resources(partition="gpu", gpus_per_job=8, nodes=2, minutes=90, account="lab", extra={"qos": "high"})
    train, score = r.check().slurm("small", trains=True), r.slurm("small", trains=False)
    assert train["nodes"] == 2 and train["ntasks_per_node"] == 4 and train["gpus_per_node"] == 4  # one task per GPU
    assert score["nodes"] == 1 and score["ntasks_per_node"] == 1 and score["gpus_per_node"] == 1
    assert train["time"] == 90 and train["partition"] == "gpu" and train["account"] == "lab"
    assert train["additional_parameters"] == {"kill_on_invalid_dep": "yes", "qos": "high"}
    cpu = Resources().slurm("tiny", trains=True)
    assert "gpus_per_node" not in cpu and cpu["time"] == 30 and "partition" not in cpu
    reserved = Resources(extra={"dependency": "afterok:1"})  # txl wires the dependencies itself
    for bad in (Resources(gpus_per_job=3, nodes=2), Resources(nodes=0), Resources(minutes=0), reserved):
        with pytest.raises(TxlError):
            bad.check()


def _outcome(tmp_path, name, value) -> dict:
    path = tmp_path / f"{name}_result.pkl"
    if value is not None:
        path.write_bytes(value if isinstance(value, bytes) else pickle.dumps(value))
    return {"job_id": "12_3", "result": str(path)}


def test_a_job_state_comes_from_slurm_while_it_knows_the_job_then_from_its_outcome(tmp_path):
    ok = _outcome(tmp_path, "ok", ("success", "trained"))
    error = "Traceback ...\n  File x\ntxl.core.errors.TxlError: no trained model\n"
    failed = _outcome(tmp_path, "bad", ("error", error))
    lost, damaged = _outcome(tmp_path, "lost", None), _outcome(tmp_path, "damaged", b"\x80not a pickle")
    assert state_of(ok, {}) == ("COMPLETED", "")
    assert state_of(failed, {}) == ("FAILED", "txl.core.errors.TxlError: no trained model")
    assert state_of(lost, {})[0] == "LOST"
    assert state_of(damaged, {})[0] == "FAILED" and "damaged" in state_of(damaged, {})[1]
    assert state_of(lost, {"12_3": ("PENDING", "Dependency")}) == ("PENDING", "Dependency")
    assert state_of(lost, {"12_3": ("CANCELLED", "None")})[0] == "CANCELLED"
    assert state_of(ok, {"12_3": ("RUNNING", "None")}) == ("RUNNING", "")  # requeued after it once finished
    assert state_of(lost, None)[0] == "LOST"  # a local job: no process of that id


def test_the_sweep_as_submitted_is_recalled_and_a_damaged_record_is_not(tmp_path):
    sweep = Sweep("quickstart", "tiny", str(tmp_path), seeds=[0, 1, 2], overrides=["train.steps=3"])
    remember(tmp_path, sweep, test=True)
    again, test = recall(tmp_path, Sweep("quickstart", "tiny", str(tmp_path)))
    assert (again.seeds, again.overrides, test) == ([0, 1, 2], ["train.steps=3"], True)
    for damaged in ("{", "[]", json.dumps({"seeds": "x", "overrides": []}), json.dumps({"overrides": 3})):
        (tmp_path / "sweep.json").write_text(damaged)
        assert recall(tmp_path, sweep) is None


def _run(tmp_path, results, *flags) -> list[str]:
    return ["run", "quickstart", "--scale", "tiny", "--results", str(results), "--no-progress"] + [
        "--set",
        f"data.root={tmp_path / 'data'}",
        *flags,
    ]


def test_launcher_flags_that_cannot_work_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    cases = [
        (["--launcher", "slurm", "--shard", "0/2"], "--shard and --launcher"),
        (["--launcher", "slurm", "--slurm", "qos"], "--slurm takes KEY=VALUE"),
        (["--launcher", "local", "--gpus-per-job", "3", "--nodes", "2"], "does not spread evenly"),
    ]
    for flags, words in cases:
        assert main(_run(tmp_path, tmp_path / "r", *flags)) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    assert main(_run(tmp_path, tmp_path / "r", "--launcher", "slurm")) == 2
    assert "pip install -e '.[cluster]'" in capsys.readouterr().err


def rows_by_job(root, name="quickstart") -> dict:
    from txl.study.registry import get_experiment

    path = results_path(root, get_experiment(name, "tiny"))
    return {(r.variant, r.seed): r for r in read_results(path)}


def assert_same_rows(a: dict, b: dict, hashes: bool = True) -> None:
    """Two sweeps wrote the same rows: the same jobs, identities, metrics and per-position losses (a plan
    search's row names the model folder it searched in its identity: compare those with `hashes=False`)."""
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key].config_hash == b[key].config_hash or not hashes, key
        assert a[key].plan == b[key].plan, key
        assert a[key].metrics == b[key].metrics, key
        assert a[key].loss_by_position == b[key].loss_by_position, key


@pytest.mark.slow
def test_the_local_launcher_runs_the_sweep_as_processes_with_the_rows_of_the_inline_runner(tmp_path, capsys):
    pytest.importorskip("submitit")
    assert main(_run(tmp_path, tmp_path / "inline")) == 0
    import torch

    threads = str(torch.get_num_threads())  # the inline runner's, here in this process: the same sums, the same rows
    flags = ["--launcher", "local", "--parallel", "2", "--cpus-per-job", threads]
    assert main(_run(tmp_path, tmp_path / "local", *flags)) == 0
    assert_same_rows(rows_by_job(tmp_path / "inline"), rows_by_job(tmp_path / "local"))
    jobs = tmp_path / "local" / "quickstart" / "tiny" / "jobs"
    records = [json.loads(line) for line in (jobs / "submitted.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["launcher"] == "local" for r in records)
    assert "training in" in (jobs / records[0]["job_id"] / f"{records[0]['job_id']}_0_log.err").read_text()
    capsys.readouterr()
    assert main(["status", "quickstart", "--scale", "tiny", "--results", str(tmp_path / "local")]) == 0
    out = capsys.readouterr().out
    assert "6 done" in out and "would submit nothing" in out
    assert main(_run(tmp_path, tmp_path / "local", "--launcher", "local")) == 0  # nothing left: nothing submitted
    assert len((jobs / "submitted.jsonl").read_text().splitlines()) == 6
    assert_a_rerun_with_other_steps_trains_anew(
        tmp_path / "local", _run(tmp_path, tmp_path / "local", "--launcher", "local")
    )


def assert_a_rerun_with_other_steps_trains_anew(root, command: list[str]) -> None:
    """The sweep in `root` run again with more steps: a new model is trained and scored, never the old one under
    the new configuration."""
    before = rows_by_job(root)
    assert main([*command, "--steps", "9"]) == 0
    rows = read_results(results_path(root, get_experiment("quickstart", "tiny")))
    trained = [r for r in rows if r.kind == "train"]
    assert len(rows) == 12 and len(trained) == 2 and trained[0].run_dir != trained[1].run_dir
    assert trained[1].metrics["bpb"] != before[("mem 16 (trained)", 0)].metrics["bpb"]
    assert {r.run_dir for r in rows[6:]} == {trained[1].run_dir}  # the evaluations read the new model


@pytest.mark.slow
def test_a_sigterm_to_the_local_launcher_stops_its_jobs_instead_of_leaving_them_training(tmp_path):
    """kill (or a scheduler's SIGTERM) to `txl run --launcher local`: its jobs stop after their step and save, and
    it ends once they have, as on Ctrl-C. The training job is held after its first checkpoint (tests/slurm/hold), so
    the signal lands mid-training by construction."""
    import signal
    import subprocess
    import sys
    import time

    hook = Path(__file__).parents[1] / "slurm" / "hold"
    hold, held = tmp_path / "hold", tmp_path / "hold.held"
    hold.touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    env["TXL_TEST_HOLD"] = str(hold)
    flags = ["--launcher", "local", "--parallel", "1", "--cpus-per-job", "1", "--steps", "60"]
    flags += ["--set", "train.save_every=10"]
    argv = [sys.executable, "-m", "txl", *_run(tmp_path, tmp_path / "r", *flags)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not held.exists() and proc.poll() is None:
            time.sleep(0.2)
        assert held.exists(), proc.communicate()[0]
        proc.send_signal(signal.SIGTERM)
        jobs = tmp_path / "r" / "quickstart" / "tiny" / "jobs"
        told = lambda: any("SIGTERM: stopping after this step" in f.read_text() for f in jobs.glob("*/*_log.err"))  # noqa: E731
        deadline = time.monotonic() + 300  # a launcher that never passes it on fails here, not hangs
        while not told() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # until the held job has its stop request
        assert told(), "the job never had the SIGTERM passed on"
        hold.unlink()  # only now: let it go on to the step where it stops
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out  # stopped as on Ctrl-C, not killed by the signal with its jobs left running
    folder = next((tmp_path / "r" / "quickstart" / "tiny" / "runs").glob("*/seed0*"))
    steps = sorted(int(p.name.split("-")[1]) for p in (folder / "checkpoints").glob("step-*"))
    assert steps and steps[-1] < 60  # the job stopped before its last step, and saved where it stopped
    assert json.loads((folder / "versions.json").read_text())["threads"] == 1  # --cpus-per-job 1: one thread


def test_local_jobs_share_the_cores_unless_told_their_threads(monkeypatch):
    from txl.study.launch import local_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert local_threads(Resources(parallel=2)) == 4 and local_threads(Resources(parallel=3)) == 2
    assert local_threads(Resources(parallel=16)) == 1 and local_threads(Resources(parallel=2, cpus_per_job=3)) == 3


def test_a_job_runs_with_the_threads_it_was_given(tmp_path, monkeypatch):
    """--cpus-per-job C for local jobs: each job's torch (and any process it starts) takes C threads, so jobs side
    by side share the machine's cores instead of each taking all of them."""
    import torch

    from txl.study import sweep as sweep_module
    from txl.study.cluster import SweepJob

    seen = []
    monkeypatch.setattr(sweep_module, "run_job", lambda *a: seen.append(torch.get_num_threads()) or "done")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    before = torch.get_num_threads()
    try:
        assert SweepJob(Sweep("quickstart", "tiny", str(tmp_path)), "mem 16 (trained)/seed0", None, 1)() == "done"
        assert seen == [1] and os.environ["OMP_NUM_THREADS"] == "1"
        torch.set_num_threads(before)
        monkeypatch.setenv("OMP_NUM_THREADS", "7")
        assert SweepJob(Sweep("quickstart", "tiny", str(tmp_path)), "mem 16 (trained)/seed0", None)() == "done"
        assert seen == [1, before] and os.environ["OMP_NUM_THREADS"] == "7"  # none given: left as it was
    finally:
        torch.set_num_threads(before)
