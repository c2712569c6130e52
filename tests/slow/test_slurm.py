"""`txl run --launcher slurm` on a real one-node Slurm (tests/slurm/start.sh; .ci/run starts it).

Without a running Slurm these tests are skipped with the reason, except in CI (CI=true), where they fail: the
bar is that they run there."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from study.test_cluster import _run, assert_a_rerun_with_other_steps_trains_anew, assert_same_rows, rows_by_job

from txl.cli import main

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _slurm_up() -> str | None:
    """None when a job can be submitted here, else why not."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install -e '.[cluster]')"
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH (run tests/slurm/start.sh as root to start a one-node Slurm)"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if out.returncode != 0 or not {"idle", "mixed", "allocated"} & set(out.stdout.split()):
        return f"Slurm has no usable node ({(out.stderr or out.stdout).strip()[:200]}); run tests/slurm/start.sh"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm():
    why = _slurm_up()
    if why and os.environ.get("CI"):
        pytest.fail(f"CI must run the Slurm tests: {why}")
    if why:
        pytest.skip(why)


def _records(root, name="quickstart") -> list[dict]:
    path = root / name / "tiny" / "jobs" / "submitted.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _squeue() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T"], capture_output=True, text=True).stdout
    return dict(line.split("|") for line in out.split())


def _wait(condition, seconds: float = 240, what: str = ""):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_slurm_sweep_writes_the_inline_rows_and_a_second_run_submits_nothing(tmp_path, capsys, messages):
    assert main(_run(tmp_path, tmp_path / "inline")) == 0
    assert main(_run(tmp_path, tmp_path / "slurm", "--launcher", "slurm", "--wait")) == 0
    assert_same_rows(rows_by_job(tmp_path / "inline"), rows_by_job(tmp_path / "slurm"))
    records = _records(tmp_path / "slurm")
    assert len(records) == 6 and all(r["launcher"] == "slurm" for r in records)
    assert sum("_" in r["job_id"] for r in records) == 5  # the five evaluations as one job array
    messages.clear()
    assert main(_run(tmp_path, tmp_path / "slurm", "--launcher", "slurm")) == 0
    assert any("nothing to submit" in m for m in messages()) and len(_records(tmp_path / "slurm")) == 6
    capsys.readouterr()
    assert main(["status", "quickstart", "--scale", "tiny", "--results", str(tmp_path / "slurm")]) == 0
    out = capsys.readouterr().out
    assert "6 done" in out and "would submit nothing" in out and records[0]["log"] in out
    assert_a_rerun_with_other_steps_trains_anew(
        tmp_path / "slurm", _run(tmp_path, tmp_path / "slurm", "--launcher", "slurm", "--wait")
    )


HOLD_HOOK = Path(__file__).parents[1] / "slurm" / "hold"  # sitecustomize.py: holds a training job after its saves


def test_a_requeued_or_cancelled_job_resumes_and_the_sweep_ends_with_the_same_rows(
    tmp_path, capsys, messages, monkeypatch
):
    flags = ["--steps", "100", "--set", "train.save_every=20"]
    assert main(_run(tmp_path, tmp_path / "inline", *flags)) == 0
    root = tmp_path / "slurm"
    # The training job waits after each checkpoint while `hold` exists (tests/slurm/hold), so it is mid-training
    # when it is requeued and when it is cancelled, however fast the machine: by construction, not by timing.
    hold, held = tmp_path / "hold", tmp_path / "hold.held"
    hold.touch()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HOLD_HOOK), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TXL_TEST_HOLD", str(hold))
    assert main(_run(tmp_path, root, "--launcher", "slurm", *flags)) == 0
    assert main(_run(tmp_path, root, "--launcher", "slurm", *flags)) == 0  # queued or running: nothing submitted
    assert len(_records(root)) == 6
    train = _records(root)[0]
    assert train["key"] == "mem 16 (trained)/seed0"
    capsys.readouterr()
    assert main(["status", "quickstart", "--scale", "tiny", "--results", str(root)]) == 0
    out = capsys.readouterr().out  # the sweep as submitted (its flags recalled), each job queued or running
    assert "--set train.steps=100" in out and "would submit nothing" in out
    jobs = [line.split("  ") for line in out.splitlines() if "/seed0" in line]
    assert len(jobs) == 6 and all({"pending", "running"} & {cell.strip() for cell in line} for line in jobs), out
    _wait(lambda: held.exists(), what="the training job to hold after its first checkpoint")
    first = int(held.read_text())
    # a time limit or a preemption first warns the job (submitit's USR2): it is requeued and resumes, same job id
    subprocess.run(["scancel", "--signal=USR2", train["job_id"]], check=True)
    _wait(lambda: int(held.read_text()) > first, what="the requeued job to resume and hold at its next checkpoint")
    assert "resuming in" in open(train["log"]).read()
    subprocess.run(["scancel", train["job_id"]], check=True)  # held before its last step: cancelled mid-training
    _wait(lambda: _squeue().get(train["job_id"]) not in {"PENDING", "RUNNING", "COMPLETING"}, what="the cancel")
    # the evaluations depending on it leave the queue too (their dependency can no longer be met)
    _wait(lambda: all(_squeue().get(r["job_id"]) not in {"PENDING", None} for r in _records(root)), what="them")
    capsys.readouterr()
    assert main(["status", "quickstart", "--scale", "tiny", "--results", str(root)]) == 0
    out = capsys.readouterr().out
    assert "cancelled" in out and "would submit 6" in out
    hold.unlink()
    assert main(_run(tmp_path, root, "--launcher", "slurm", "--wait", *flags)) == 0
    assert_same_rows(rows_by_job(tmp_path / "inline"), rows_by_job(root))
    again = _records(root)[6]
    assert again["key"] == train["key"] and again["job_id"] != train["job_id"]
    assert "resuming in" in open(again["log"]).read()  # from the checkpoint the cancelled job left


def test_the_after_analyses_run_once_as_a_job_after_the_training_jobs(tmp_path, capsys):
    name = "analysis/plan-search"
    inline = ["run", name, "--scale", "tiny", "--no-progress", "--set", f"data.root={tmp_path / 'data'}"]
    assert main([*inline, "--results", str(tmp_path / "inline")]) == 0
    assert main([*inline, "--results", str(tmp_path / "slurm"), "--launcher", "slurm", "--wait"]) == 0
    a, b = rows_by_job(tmp_path / "inline", name), rows_by_job(tmp_path / "slurm", name)
    assert len(a) > 1  # the analysis added its rows
    assert_same_rows(a, b, hashes=False)
    records = _records(tmp_path / "slurm", name)
    trained = ["all long/seed0", "lrm=1@first:16,srm=4 (trained)/seed0", "lrm=1@interleave:16,srm=4 (trained)/seed0"]
    assert [r["key"] for r in records] == [*trained, "after"]
    assert len({r["job_id"].split("_")[0] for r in records[:3]}) == 1  # the training runs as one job array
    after = records[-1]
    script = open(after["log"].replace("_0_log.err", "_submission.sh")).read()
    assert f"--dependency=afterok:{':'.join(sorted(r['job_id'] for r in records[:3]))}" in script
    assert main([*inline, "--results", str(tmp_path / "slurm"), "--launcher", "slurm", "--wait"]) == 0
    assert len(_records(tmp_path / "slurm", name)) == len(records)  # done: not run a second time
