"""Bad input gets one line and exit code 2 (every numeric field of every config section, the flags beside them);
a second writer is refused, naming the holder."""

import dataclasses
import json
import os
import subprocess
import sys
import typing

import pytest

import experiments  # noqa: F401  (registers every definition)
from txl.cli import main
from txl.config import RunConfig
from txl.config.domains import DOMAINS, HUGE
from txl.core.locks import FolderLock
from txl.study.registry import get_experiment, run_dir
from txl.study.sweep import run_experiment

# where each section sits in a run config
SECTIONS = {
    "model": "ModelConfig",
    "model.layers.0": "LayerConfig",
    "model.las": "LaSConfig",
    "model.t5": "T5Config",
    "model.fastrpb": "FastRPBConfig",
    "model.sikf": "SIKFConfig",
    "data": "DataConfig",
    "data.synthetic": "SyntheticConfig",
    "train": "TrainConfig",
    "eval": "EvalConfig",
}


def _is_float(tp) -> bool:
    args = typing.get_args(tp) or (tp,)
    return float in args or any(typing.get_args(a) == (float,) for a in args)


def bad_values(domain, tp) -> list[str]:
    """Values just outside the domain, non-finite ones for floats, and a size no machine holds."""
    step = 0.5 if _is_float(tp) else 1
    out = []
    if domain.lo is not None:
        out.append(domain.lo if domain.lo_open else domain.lo - step)
    if domain.hi is not None:
        out.append(domain.hi if domain.hi_open else domain.hi + step)
    texts = [str(v) for v in out]
    if _is_float(tp):
        texts += ["NaN", "Infinity", "-Infinity"]
    elif domain.hi is None:
        texts.append(str(10 * HUGE))
    return texts


def cases():
    classes = {cls.__name__: cls for cls in DOMAINS}
    for path, name in SECTIONS.items():
        cls = classes[name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in DOMAINS[cls]:
                continue
            listed = typing.get_origin(hints[f.name]) is list or any(
                typing.get_origin(a) is list for a in typing.get_args(hints[f.name])
            )
            for text in bad_values(DOMAINS[cls][f.name], hints[f.name]):
                value = f"[{text}]" if listed else text
                if f.name == "betas":
                    value = f"[0.9,{text}]"
                yield pytest.param(f"{path}.{f.name}", value, id=f"{path}.{f.name}={value}")


CASES = list(cases())


def test_every_field_with_a_domain_is_covered():
    covered = {c.values[0] for c in CASES}
    assert len(covered) == sum(len(d) for d in DOMAINS.values())
    assert {"model.n_head", "train.lr", "train.clip", "model.layers.0.mem_len", "eval.max_segments"} <= covered


@pytest.mark.parametrize("key, value", CASES)
def test_out_of_domain_values_are_one_line_errors(key, value, tmp_path, capsys):
    code = main(["train", "--preset", "tiny", "--run-dir", str(tmp_path / "run"), "--set", f"{key}={value}"])
    err = capsys.readouterr().err.strip()
    assert code == 2, f"{key}={value} was accepted"
    assert "\n" not in err and err.startswith("txl train: error:") and "Traceback" not in err
    assert key.rsplit(".", 1)[-1] in err, err  # the message names the field
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--preset", "tiny", "--n-head", "0"], "model.n_head must be >= 1"),
        (["train", "--preset", "tiny", "--lr", "nan"], "train.lr must be a finite number"),
        (["train", "--preset", "tiny", "--lr", "inf"], "train.lr must be a finite number"),
        (["train", "--preset", "tiny", "--set", "train.clip=NaN"], "train.clip must be a finite number"),
        (["train", "--preset", "tiny", "--device", "bogus"], "train.device must be auto, cpu, cuda or cuda:N"),
        (["train", "--preset", "tiny", "--d-model", "1000000000000000"], "beyond any machine"),
        (["train", "--preset", "tiny", "--steps", "0"], "train.steps must be >= 1"),
        (["run", "quickstart", "--scale", "tiny", "--steps", "0"], "train.steps must be >= 1"),
        (["budget", "--layers", "4", "--memory", ""], "has an empty item"),
        (["generate", "nowhere", "--top-k", "-3"], "--top-k must be >= 0"),
        (["generate", "nowhere", "--temperature", "nan"], "--temperature must be a finite number > 0"),
        (["eval", "nowhere", "--tgt-len", "0"], "--tgt-len must be >= 1"),
        (["eval", "nowhere", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["eval", "nowhere", "--max-segments", "0"], "--max-segments must be >= 1"),
        (["plan", "nowhere", "--budget", "-1"], "the budget must be a finite number >= 0"),
        (["plan", "nowhere", "--budget-mib", "nan"], "the budget must be a finite number >= 0"),
        (["plan", "nowhere", "--budget", "8", "--confirm", "0"], "--confirm must be >= 1"),
        (["plan", "nowhere", "--budget-mib", "inf"], "the budget must be a finite number >= 0"),
        (["plan", "nowhere", "--budget-of", ""], "--budget-of needs a memory plan"),
        (["run", "quickstart", "--scale", "tiny", "--seeds", "100000000000"], "--seeds must be in 1..1000"),
        (["analyze", "context", "nowhere", "--tolerance", "nan"], "--tolerance must be a finite number"),
        (["analyze", "context", "nowhere", "--tolerance", "-1"], "--tolerance must be a finite number"),
        (["train", "--preset", "tiny", "--steps", "2", "--set", "train.device=cuda:x"], "train.device must be"),
        (["plan", "nowhere", "--budget", "8"], "no checkpoint found at nowhere"),
        (["plan", "nowhere", "--budget-of", "2x8"], "no checkpoint found at nowhere"),
        (
            ["plan", "nowhere", "--budget", "8", "--split", "test", "--append", "quickstart"],
            "--append records plans chosen on valid",
        ),
    ],
)
def test_bad_flags_are_one_line_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_huge_batch_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--batch-size",
                "1000000",
                "--run-dir",
                "run",
                "--set",
                f"data.root={tmp_path}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()  # the token cache's progress lines, then the error
    last = err.splitlines()[-1]
    assert last.startswith("txl train: error:") and "Traceback" not in err
    assert (
        "cannot make 1000000 streams" in last or "a training step needs about" in last
    )  # whichever check sees it first


def test_the_run_config_default_passes():
    assert RunConfig().validate()


HOLDER = (
    "import sys, time; from txl.core.locks import FolderLock; "
    "lock = FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)"
)


@pytest.fixture
def hold():
    """hold(folder): lock `folder` from another process until the test ends (or it is killed)."""
    procs = []

    def start(folder):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_a_second_writer_of_a_run_folder_is_refused_naming_the_holder(tmp_path, capsys, hold):
    proc = hold(tmp_path / "run")
    code = main(
        ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "run"), "--set", f"data.root={tmp_path / 'data'}"]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and f"is in use by pid {proc.pid}" in err and "wait for it to finish" in err
    proc.kill()
    proc.wait()  # the lock goes with its process, however it ends
    with FolderLock(tmp_path / "run"):
        pass


@pytest.mark.slow
def test_a_sweep_skips_runs_another_process_trains_and_never_duplicates_rows(tmp_path, hold, messages):
    exp = get_experiment("quickstart", "tiny")
    exp.base.data.root = str(tmp_path / "data")
    trained = exp.variants[[v.trains for v in exp.variants].index(True)].name
    proc = hold(run_dir(tmp_path / "r", exp, trained, 0))
    rows = run_experiment(exp, tmp_path / "r", progress=False)
    said = messages()
    assert rows == [] and any(f"in use by pid {proc.pid}" in s for s in said)
    assert any("being trained by another process" in s for s in said) and "fill them in with: txl run" in said[-1]
    proc.kill()
    proc.wait()
    rows = run_experiment(exp, tmp_path / "r", progress=False)
    assert len(rows) == len(exp.variants)
    again = run_experiment(exp, tmp_path / "r", progress=False)  # all done: nothing appended
    assert len(again) == len(rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run folder, trained once for the damaged-file cases (each test copies it)."""
    from txl.model.plans import check_run
    from txl.train.loop import Trainer
    from txl.train.presets import get_preset

    root = tmp_path_factory.mktemp("trained")
    run = get_preset("tiny")
    run.train.steps, run.data.root = 2, str(root / "data")
    Trainer(check_run(run), root / "run", progress=False).fit()
    return root / "run"


def damaged_copy(trained, tmp_path, damage: str):
    import shutil

    from txl.train import checkpoint as ckpt

    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    folder = ckpt.find_checkpoint(run)
    weights = folder / "model.safetensors"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "random weights":
        weights.write_bytes(bytes(range(256)) * 64)
    elif damage == "config disagrees with the weights":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["model"]["d_inner"] *= 2
        (folder / "config.json").write_text(json.dumps(cfg))
    elif damage == "garbage config.json":
        (folder / "config.json").write_text("{garbage")
    return run


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage", ["truncated weights", "random weights", "config disagrees with the weights", "garbage config.json"]
)
def test_a_damaged_checkpoint_is_one_line_naming_the_file(trained, tmp_path, capsys, damage):
    run = damaged_copy(trained, tmp_path, damage)
    assert main(["eval", str(run), "--max-segments", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and ("model.safetensors" in err or "config.json" in err), err


@pytest.mark.slow
def test_a_damaged_results_file_reports_its_good_rows_and_names_the_bad_lines(tmp_path, capsys):
    exp = get_experiment("quickstart", "tiny")
    exp.base.data.root = str(tmp_path / "data")
    run_experiment(exp, tmp_path / "r", progress=False)
    path = tmp_path / "r" / "quickstart" / "tiny" / "results.jsonl"
    lines = path.read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["metrics"]
    lines[1] = json.dumps(broken)  # a row missing a field
    lines.insert(2, "garbage, not json")
    lines.insert(3, "[1, 2, 3]")  # not an object
    path.write_text("\n".join(lines) + "\n")
    assert main(["report", "quickstart", "--scale", "tiny", "--results", str(tmp_path / "r"), "--no-plot"]) == 0
    out, err = capsys.readouterr()
    assert "3 damaged lines left out (line 2 lacks metrics; line 3 is not JSON; line 4 is not a JSON object)" in err
    assert sum(line.startswith("mem ") for line in out.splitlines()) == len(exp.variants) - 1  # every good row is shown


def test_written_files_follow_the_umask(tmp_path):
    from txl.core.io import FILE_MODE, atomic_write_text

    atomic_write_text(tmp_path / "x.json", "{}")
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == FILE_MODE
    assert FILE_MODE & 0o044  # group and others can read, as with open() under the usual umask


def test_unwritable_places_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "file").write_text("a regular file")
    code = main(
        ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "file" / "run"), "--set", f"data.root={tmp_path}"]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("txl train: error:") and "file" in err


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    from txl.core.io import atomic_write_text, owner_tag

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = tmp_path / f".x.json.abc123.tmp-{owner_tag(proc.pid)}"
    stale.write_text("half a file")
    live = tmp_path / f".x.json.def456.tmp-{owner_tag()}"  # this process: a write in progress
    live.write_text("")
    atomic_write_text(tmp_path / "x.json", "{}")
    assert not stale.exists() and live.exists() and (tmp_path / "x.json").read_text() == "{}"


def test_a_run_that_cannot_fit_is_refused_with_its_estimate(tmp_path, capsys):
    code = main(
        [
            "train",
            "--preset",
            "tiny",
            "--d-model",
            "100000",
            "--d-inner",
            "64",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            f"data.root={tmp_path / 'data'}",
        ]
    )  # about 4 TB of weights and Adam state
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "a training step needs about" in err and "optimizer" in err and "available" in err
    assert not (tmp_path / "run").exists()


def test_budget_prints_what_a_step_needs(capsys):
    assert main(["budget", "--layers", "12", "--memory", "512"]) == 0
    out = capsys.readouterr().out
    assert "training         about 1.4 GiB per step at batch 1" in out and "evaluation       about" in out


@pytest.mark.parametrize("name", ["bogus", "mps", "cuda:x", "cpu:0:1"])
def test_a_device_name_torch_does_not_take_is_a_txl_error(name):
    from txl.core.devices import pick_device
    from txl.core.errors import TxlError

    with pytest.raises(TxlError, match=r"device|cuda"):
        pick_device(name)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xed\xa0\x80 not text", "cannot read tokenizer"),
        (b"[1, 2, 3]", "holds a JSON list"),
        (b'{"kind": "words"}', "'symbols' must be a list of strings"),
        (b'{"kind": "words", "symbols": ["a", "b"]}', "must include <unk>"),
        (b'{"kind": "chars", "symbols": ["ab", "c"]}', "not single characters"),
        (b'{"kind": "sentencepiece", "model_file": "../../etc/passwd"}', "must name a file beside it"),
        (b'{"kind": "morse"}', "unknown tokenizer kind 'morse'"),
    ],
)
def test_a_damaged_tokenizer_file_is_one_line(content, message, tmp_path):
    from txl.core.errors import TxlError
    from txl.data.tokenizers import load_tokenizer

    path = tmp_path / "vocab.json"
    path.write_bytes(content)
    with pytest.raises(TxlError, match=message) as e:
        load_tokenizer(path)
    assert "\n" not in str(e.value)
    with pytest.raises(TxlError, match="is not a file"):
        load_tokenizer(tmp_path)


def test_a_config_that_is_not_a_regular_utf8_file_is_one_line(tmp_path, capsys):
    import os

    from txl.config import ConfigError, load_config

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    (tmp_path / "latin.json").write_bytes(b'{"model": {"n_layer": 2}, "x": "\xe9"}')
    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    cases = {
        fifo: "is not a regular file",  # read, it would wait forever
        tmp_path / "latin.json": "is not UTF-8 text",
        tmp_path: "is not a regular file",
        tmp_path / "loop.json": "config file",
        "/dev/zero": "is not a regular file",  # read, it would never end
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    assert main(["budget", "--config", str(fifo)]) == 2 and "is not a regular file" in capsys.readouterr().err


def test_budget_of_a_run_config_counts_the_runs_own_segment_length(tmp_path, capsys):
    from txl.config import save_config
    from txl.train.presets import get_preset

    run = get_preset("tiny")
    run.train.tgt_len = 24
    save_config(run, tmp_path / "config.json")
    assert main(["budget", "--config", str(tmp_path / "config.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tgt_len"] == 24  # one plan: one object


def test_temporary_files_of_dead_writers_are_cleaned_whatever_they_were_writing(tmp_path):
    from txl.core.io import atomic_write_text, owner_tag

    dead = owner_tag(pid=2**22 + 12345)  # no such process
    left = tmp_path / f".evals-20261203-101010.json.abc.tmp-{dead}"  # a killed eval's, another name
    left.write_text("{")
    alive = tmp_path / f".other.json.abc.tmp-{owner_tag()}"  # this process is writing it
    alive.write_text("{")
    atomic_write_text(tmp_path / "report.md", "whole")
    assert not left.exists() and alive.exists() and (tmp_path / "report.md").read_text() == "whole"


def test_checkpoint_weights_follow_the_umask_like_every_other_file(tmp_path):
    from conftest import tiny_run

    from txl.core.io import FILE_MODE
    from txl.train.checkpoint import find_checkpoint
    from txl.train.loop import Trainer

    Trainer(tiny_run(tmp_path, **{"train.steps": 1}), tmp_path / "run", progress=False).fit()
    folder = find_checkpoint(tmp_path / "run")
    modes = {f.name: f.stat().st_mode & 0o777 for f in folder.iterdir()}
    assert modes["model.safetensors"] == FILE_MODE and set(modes.values()) == {FILE_MODE}, modes


TORCH_FULL = (
    "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file: No space left on device"
)
SAFETENSORS_FULL = (
    "Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: 'No space left on device' })"
)


@pytest.mark.parametrize(
    "error",
    [RuntimeError(TORCH_FULL), type("SafetensorError", (Exception,), {})(SAFETENSORS_FULL)],
    ids=["torch", "safetensors"],
)
def test_a_full_disk_from_any_library_is_one_line(error, monkeypatch, capsys):
    from txl.cli import COMMANDS

    def full(args):
        raise error

    monkeypatch.setitem(COMMANDS, "budget", (*COMMANDS["budget"][:2], full))
    assert main(["budget"]) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("eval.tgt_len", -5, "eval.tgt_len"),
        ("train.tgt_len", 0, "train.tgt_len must be >= 1"),
        ("eval.max_segments", -1, "eval.max_segments"),
        ("eval.batch_size", -3, "eval.batch_size"),
    ],
)
def test_a_run_folders_config_is_checked_in_every_section_when_read_back(key, value, message, tmp_path, capsys):
    from conftest import tiny_run

    from txl.train.checkpoint import find_checkpoint
    from txl.train.loop import Trainer

    Trainer(tiny_run(tmp_path, **{"train.steps": 1}), tmp_path / "run", progress=False).fit()
    path = find_checkpoint(tmp_path / "run") / "config.json"
    data = json.loads(path.read_text())
    section, name = key.split(".")
    data[section][name] = value
    path.write_text(json.dumps(data))
    capsys.readouterr()  # what training said
    assert main(["eval", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "config.json" in err and "\n" not in err and "Traceback" not in err


def test_a_corpus_path_that_loops_is_one_line(tmp_path, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert main(["data", "stats", str(tmp_path / "loop")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be followed to a file or folder" in err and "\n" not in err


def _words_corpus(tmp_path):
    from txl.config import DataConfig
    from txl.data import load_corpus

    text = tmp_path / "text.txt"
    text.write_text("".join(f"the cat {w} sat on the mat {w}\n" for w in ("a", "b", "c", "d", "e", "f") * 40))
    return load_corpus(DataConfig(corpus=str(text), tokenizer="words", root=str(tmp_path / "data")))


def test_a_cache_vocabulary_that_lost_symbols_is_damaged_and_rebuilt(tmp_path, capsys):
    from txl.data import cache_problem

    corpus = _words_corpus(tmp_path)
    vocab = corpus.cache_dir / "vocab.json"
    data = json.loads(vocab.read_text())
    whole = len(data["symbols"])
    vocab.write_text(json.dumps({**data, "symbols": data["symbols"][:5]}))
    assert cache_problem(corpus.cache_dir) == f"vocab.json holds 5 symbols, meta.json says {whole}"
    root = str(tmp_path / "data")
    assert main(["data", "verify", str(tmp_path / "text.txt"), "--tokenizer", "words", "--data-root", root]) == 0
    assert len(json.loads(vocab.read_text())["symbols"]) == whole and cache_problem(corpus.cache_dir) is None


def test_a_run_tokenizer_that_is_not_the_models_vocabulary_is_one_line(tmp_path, capsys):
    from conftest import tiny_run

    from txl.train.loop import Trainer

    text = tmp_path / "text.txt"
    text.write_text("".join(f"the cat {w} sat on the mat {w}\n" for w in ("a", "b", "c", "d") * 60))
    run = tiny_run(tmp_path, **{"train.steps": 1, "data.corpus": str(text), "data.tokenizer": "words"})
    Trainer(run, tmp_path / "run", progress=False).fit()
    vocab = tmp_path / "run" / "tokenizer" / "vocab.json"
    data = json.loads(vocab.read_text())
    vocab.write_text(json.dumps({**data, "symbols": data["symbols"][:5]}))
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--tokens", "3", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has 5 symbols, the model" in err and "\n" not in err


def test_a_word_list_that_is_not_utf8_or_not_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "text.txt").write_text("a b c\n" * 50)
    bad = tmp_path / "words.txt"
    bad.write_bytes(b"\xff\xfe\xfd\n")
    assert main(["data", "stats", str(tmp_path / "text.txt"), "--tokenizer", str(bad)]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    assert main(["data", "stats", str(tmp_path / "text.txt"), "--tokenizer", str(fifo)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a regular file" in err and "\n" not in err


def test_a_full_disk_under_torch_save_is_the_oserror_not_torchs_archive_error(tmp_path, monkeypatch):
    import errno

    import torch

    from txl.train.checkpoint import save_tensors

    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 64:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda *a, **k: Full(real_open(*a, **k)))
    with pytest.raises(OSError) as e:
        save_tensors({"w": torch.zeros(1000)}, tmp_path / "state.pt")
    assert e.value.errno == errno.ENOSPC
