"""Files txl reads back that are damaged or hand-edited: each bad record is named and left out, never shown, never
a traceback, and never the end of a sweep (issue 39, items 2, 3 and 5)."""

import json
import math

import pytest

import experiments  # noqa: F401  (registers every definition)
from txl.cli import main
from txl.study.cluster import read_records
from txl.study.registry import get_experiment, results_path
from txl.study.results import read_results

GOOD = {
    "experiment": "quickstart", "scale": "tiny", "variant": "v", "kind": "train", "seed": 0, "config_hash": "h",
    "plan": {"memory": "2x16", "range": "2xinf", "attn": "2xxl"}, "run_dir": "",
    "budget": {"cached_positions": 32, "memory_bytes": 4096, "receptive_field": 32},
    "metrics": {"loss": 1.0, "bpb": 1.4, "split": "valid"},
}  # fmt: skip


def _with(**change) -> dict:
    row = json.loads(json.dumps(GOOD))
    for dotted, value in change.items():
        section, _, key = dotted.partition("__")
        (row[section] if key else row)[key or section] = value
    return row


BAD = [
    (_with(budget__memory_bytes=math.nan), "budget"),
    (_with(budget__memory_bytes=-1), "budget"),
    (_with(budget__memory_bytes=math.inf), "budget"),
    (_with(budget__memory_bytes=True), "budget"),
    (_with(plan__dtype=8), "plan"),
    (_with(plan__sinks=["4"]), "plan"),
    (_with(plan__compress={"rate": 4}), "plan"),
    (_with(metrics__bpb="1.2"), "metrics"),
    (_with(metrics__loss=None), "metrics"),
]


@pytest.mark.parametrize("row,field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_a_damaged_row_is_named_by_its_field_and_left_out(tmp_path, messages, row, field):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(row) + "\n")
    rows = read_results(path)
    assert len(rows) == 1 and rows[0].budget["memory_bytes"] == 4096
    assert any(f"line 2 has {field} = " in m for m in messages())


def test_a_report_leaves_out_a_row_with_nan_bytes_and_says_so_once_when_none_is_left(tmp_path, capsys):
    path = results_path(tmp_path, get_experiment("quickstart", "tiny"))
    path.parent.mkdir(parents=True)
    other = _with(variant="w", budget__memory_bytes=math.nan)
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(other) + "\n")
    report = ["report", "quickstart", "--scale", "tiny", "--results", str(tmp_path), "--no-plot"]
    assert main(report) == 0
    out, err = capsys.readouterr()
    assert "v " in out and "\nw " not in out and "line 2 has budget" in err
    path.write_text(json.dumps(other) + "\n")
    assert main(report) == 2
    err = capsys.readouterr().err
    assert "no readable tiny rows" in err and "run it first" not in err and "Traceback" not in err


def test_a_damaged_job_record_is_set_aside_and_txl_status_goes_on(tmp_path, capsys, messages):
    pytest.importorskip("submitit")
    exp = get_experiment("quickstart", "tiny")
    jobs = results_path(tmp_path, exp).parent / "jobs"
    jobs.mkdir(parents=True)
    good = {"key": "mem 0/seed0", "digest": "d", "job_id": "12", "launcher": "slurm"}
    good |= {"log": "a.err", "out": "a.out", "result": str(tmp_path / "none.pkl")}
    bad = [
        {k: v for k, v in good.items() if k != "result"} | {"key": "mem 2/seed0"},
        good | {"key": "mem 4/seed0", "result": 5},
        good | {"key": "mem 8/seed0", "launcher": "pbs"},
        ["not", "a", "record"],
    ]
    (jobs / "submitted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [good, *bad]))
    assert list(read_records(jobs)) == ["mem 0/seed0"]
    said = " ".join(messages())
    assert "line 2 has result = 'None', not text" in said and "line 3 has result = '5'" in said
    assert "line 4 has launcher 'pbs'" in said and "line 5 is not" in said
    capsys.readouterr()
    assert main(["status", "quickstart", "--scale", "tiny", "--results", str(tmp_path)]) == 0
    assert "txl run would submit" in capsys.readouterr().out


def _torch_loading(pid: int) -> bool:
    """Whether a process has begun to load torch's C++ (its library is mapped): txl's command line is running."""
    try:
        return "libtorch" in open(f"/proc/{pid}/maps").read()
    except OSError:
        return True  # it has ended already


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.2, 0.5, 1.0, 2.0])
def test_ctrl_c_at_any_moment_of_a_command_is_one_line_and_130(tmp_path, delay):
    """While torch loads (Ctrl-C held back until it has), while data is read, while the model trains: whenever a
    Ctrl-C lands once txl's command line runs, one line and exit 130 (or 0 when it came after the end), never a
    traceback. The delays count from the moment torch begins to load, not from the start, so that Python's own
    start-up (site and .pth files, outside txl) is never what the test hits, however slow the machine."""
    import signal
    import subprocess
    import sys
    import time

    run = ["--run-dir", str(tmp_path / "run"), "--no-progress", "--set", f"data.root={tmp_path / 'data'}"]
    command = [sys.executable, "-m", "txl", "train", "--preset", "tiny", "--steps", "3", *run]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal starts it
    )
    while not _torch_loading(proc.pid):
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130) and "Traceback" not in err, err
    said = [line for line in err.splitlines() if "interrupted" in line]
    assert proc.returncode == 0 or said == ["txl train: interrupted; files written so far are whole"], err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run (memory 16, 4 steps) and its data root."""
    from conftest import tiny_run

    from txl.train.loop import Trainer

    tmp = tmp_path_factory.mktemp("trained")
    Trainer(tiny_run(tmp, **{"train.steps": 4}), tmp / "run", progress=False).fit()
    return tmp / "run"


def _edit(path, layer: int, **fields) -> None:
    config = json.loads(path.read_text())
    config["model"]["layers"][layer].update(fields)
    path.write_text(json.dumps(config))


def test_a_bad_value_in_a_config_file_is_named_with_the_file(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    _edit(run / "config.json", 1, mem_dtype="int3")
    assert main(["train", "--run-dir", str(run), "--resume", "--steps", "6", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.json'}: model.layers.1.mem_dtype: unknown memory dtype 'int3'" in err
    jobs = results_path(tmp_path / "r", get_experiment("quickstart", "tiny")).parent / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "sweep.json").write_text(json.dumps({"seeds": [0], "overrides": ["train.steps=-5"], "test": False}))
    assert main(["status", "quickstart", "--scale", "tiny", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{jobs / 'sweep.json'} (as last submitted): train.steps must be >= 1" in err


def test_a_folder_of_run_folders_names_them_instead_of_a_bare_no_checkpoint(trained, tmp_path, capsys):
    """An experiment's variant folder holds one run folder per seed: given it, the error names them."""
    variant = tmp_path / "fp32-trained"
    variant.mkdir()
    (variant / "seed0-abc").symlink_to(trained, target_is_directory=True)
    assert main(["eval", str(variant)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"no checkpoint found at {variant} (it holds the run folder {variant / 'seed0-abc'}: give one)")
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "(give a run folder or a checkpoint folder)" in capsys.readouterr().err


def test_what_is_not_a_file_is_called_so(tmp_path, capsys):
    assert main(["train", "--preset", "tiny", "--corpus", "/dev/zero", "--run-dir", str(tmp_path / "r")]) == 2
    assert "corpus /dev/zero is neither a regular file nor a folder" in capsys.readouterr().err
    assert main(["import", "/dev/zero", "--from", "original", "--out", str(tmp_path / "o")]) == 2
    assert "/dev/zero is not a regular file" in capsys.readouterr().err


def test_an_import_whose_config_txl_cannot_run_writes_nothing(tmp_path, capsys):
    import torch

    from txl.config import ModelConfig
    from txl.interop.convert import export_state
    from txl.model.plans import apply_plans
    from txl.model.transformer import TransformerXL

    fields = dict(vocab_size=256, n_layer=2, d_model=16, n_head=2, d_head=8, d_inner=32)
    torch.manual_seed(0)
    tensors, _ = export_state(TransformerXL(apply_plans(ModelConfig(**fields), memory="8")).eval(), "original")
    torch.save(tensors, tmp_path / "model.pt")
    (tmp_path / "args.json").write_text(json.dumps({**fields, "n_token": 256, "tgt_len": -5, "mem_len": 8}))
    argv = ["import", str(tmp_path / "model.pt"), "--from", "original", "--config", str(tmp_path / "args.json")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "the imported config is not one txl can run" in err and "tgt_len" in err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_analyze_with_out_elsewhere_writes_nothing_in_a_read_only_run(trained, tmp_path, capsys):
    import os
    import shutil
    import stat

    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for p in [run, *run.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            os.chmod(p, stat.S_IRUSR | stat.S_IXUSR)
    try:
        for analysis in ("attention", "sensitivity"):
            out = tmp_path / analysis
            assert main(["analyze", analysis, str(run), "--out", str(out), "--no-progress"]) == 0, analysis
            assert (out / "tb").is_dir()
        assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
        assert "Traceback" not in capsys.readouterr().err
    finally:
        for p in [run, *run.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, stat.S_IRWXU)


def test_the_whole_of_another_text_is_scored_whole(trained, tmp_path, capsys):
    text = tmp_path / "other.txt"
    text.write_bytes(bytes(range(32, 127)) * 3000)  # 285,000 bytes, past the tiny run's cap of 100,000
    argv = ["eval", str(trained), "--corpus", str(text), "--split", "whole", "--json", "--no-progress"]
    assert main([*argv, "--max-segments", "100000"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["tokens"] > 250_000


def test_an_edited_config_json_beside_the_checkpoint_is_named_not_silently_ignored(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    argv = ["eval", str(run), "--no-progress", "--max-segments", "2"]
    assert main(argv) == 0 and "differs" not in capsys.readouterr().err
    _edit(run / "config.json", 0, mem_len=3)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"{run / 'config.json'} differs from the checkpoint's own config" in err
    assert "model.layers.0.mem_len: 3 -> 16" in err and "is used" in err
