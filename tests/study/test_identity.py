"""A result is what its configuration and data say it is: sweep run folders keyed by the model's identity, a
user's text by its content, rows checked for the model they were scored with, resume flags applied or refused,
and hints that reproduce the command they stand for."""

import json
import shlex

import pytest

import experiments  # noqa: F401  (registers every definition)
from txl.cli import main
from txl.config import DataConfig
from txl.core.errors import TxlError
from txl.core.io import read_jsonl
from txl.data.content import content_hash
from txl.study.registry import IDENTITY, get_experiment, results_path, run_dir
from txl.study.results import read_results
from txl.study.sweep import model_in


def _run(tmp_path, *flags, results="r") -> list[str]:
    root = str(tmp_path / results)
    return ["run", "quickstart", "--scale", "tiny", "--results", root, "--no-progress"] + [
        "--set",
        f"data.root={tmp_path / 'data'}",
        *flags,
    ]


def _trained(tmp_path, results="r", folder="tiny") -> list[dict]:
    rows = read_jsonl(tmp_path / results / "quickstart" / folder / "results.jsonl")
    return [r for r in rows if r["kind"] == "train"]


def _text(path, seed: int, letters: str) -> None:
    import random

    rng = random.Random(seed)
    path.write_text("".join(rng.choice(letters) for _ in range(30000)))


@pytest.mark.slow
def test_a_sweep_rerun_with_other_steps_trains_a_model_of_its_own(tmp_path, capsys, messages):
    assert main(_run(tmp_path, "--steps", "5")) == 0
    assert main(_run(tmp_path, "--steps", "9")) == 0
    first, second = _trained(tmp_path)
    assert first["config_hash"] != second["config_hash"] and first["run_dir"] != second["run_dir"]
    assert first["metrics"]["bpb"] != second["metrics"]["bpb"]  # not the 5-step model's score again
    assert json.loads(open(second["run_dir"] + "/config.json").read())["train"]["steps"] == 9
    for row in (first, second):  # each row names the model it scored: the one its configuration asks for
        assert row["model"]["key"] == row["model"]["asked"] and row["run_dir"].endswith(row["model"]["key"][:8])
    # an override changes the identity too, and every evaluation reads its own configuration's model
    assert main(_run(tmp_path, "--steps", "5", "--set", "train.lr=0.01")) == 0
    rows = read_jsonl(tmp_path / "r" / "quickstart" / "tiny" / "results.jsonl")
    third = [r for r in rows[12:] if r["kind"] == "eval"]
    assert len(third) == 5 and {r["run_dir"] for r in third} == {_trained(tmp_path)[2]["run_dir"]}
    messages.clear()
    assert main(_run(tmp_path, "--steps", "9")) == 0  # the same configuration again: nothing to do
    assert all("skipped" in m for m in messages() if "seed0" in m)


@pytest.mark.slow
def test_an_edited_corpus_file_is_a_new_corpus_and_the_change_is_named(tmp_path, capsys, messages):
    text = tmp_path / "text.txt"
    _text(text, 0, "abcdef \n")
    assert main(_run(tmp_path, "--corpus", str(text))) == 0
    folder = next(p.name for p in (tmp_path / "r" / "quickstart").iterdir() if p.name.startswith("tiny-on-"))
    before = _trained(tmp_path, folder=folder)
    _text(text, 1, "uvwxyz \n")  # the same path, other text
    messages.clear()
    assert main(_run(tmp_path, "--corpus", str(text))) == 0
    said = [m for m in messages() if "changed since" in m]
    assert len(said) == 1 and str(text) in said[0] and "6 rows" in said[0]
    after = _trained(tmp_path, folder=folder)[1]
    assert after["data"]["content"] != before[0]["data"]["content"] and after["run_dir"] != before[0]["run_dir"]
    assert after["metrics"]["bpb"] != before[0]["metrics"]["bpb"]


def test_a_content_hash_follows_the_bytes_and_is_kept_while_the_file_is_unchanged(tmp_path, monkeypatch):
    text = tmp_path / "t.txt"
    text.write_text("one text\n")
    cfg = DataConfig(corpus=str(text), root=str(tmp_path / "data"))
    first = content_hash(cfg)
    assert first == content_hash(cfg) and content_hash(DataConfig(corpus="pystdlib")) is None
    text.write_text("another!\n")  # the same size: the modification time and the bytes tell
    assert content_hash(cfg) != first
    kept = list((tmp_path / "data").glob("local-*/content.json"))
    assert len(kept) == 1
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    content_hash(cfg)
    assert str(text) not in map(str, opened)  # read back from content.json, not hashed again


def test_a_run_folder_holding_another_configuration_is_refused_naming_the_fields(tmp_path):
    exp = get_experiment("quickstart", "tiny")
    folder = run_dir(tmp_path, exp, "mem 16 (trained)", 0)
    folder.mkdir(parents=True)
    other = exp.identity(exp.variant("mem 16 (trained)"), 0)
    other["train"]["train"]["steps"] = 3
    (folder / IDENTITY).write_text(json.dumps({"key": "0" * 12, "identity": other}))
    with pytest.raises(TxlError, match=r"holds another model.*train\.train\.steps: 3 -> 5"):
        model_in(exp, folder, "mem 16 (trained)", 0)


def test_rows_scored_with_another_model_are_left_out_and_named(tmp_path, messages):
    path = tmp_path / "results.jsonl"
    base = {
        "experiment": "quickstart", "scale": "tiny", "kind": "train", "seed": 0, "plan": {"memory": "2x16",
        "range": "2xinf", "attn": "2xxl"}, "budget": {"cached_positions": 32, "memory_bytes": 1.0,
        "receptive_field": 32}, "metrics": {"loss": 1.0, "split": "valid"}, "run_dir": "r/runs/a/seed0",
    }  # fmt: skip
    lines = [
        {**base, "variant": "a", "config_hash": "h1", "metrics": {"loss": 1.0, "split": "valid"}},
        # an earlier txl resumed a's model under a new configuration: the same folder, the same scores
        {**base, "variant": "a", "config_hash": "h2", "metrics": {"loss": 1.0, "split": "valid"}},
        {**base, "variant": "a", "config_hash": "h2", "metrics": {"loss": 1.0, "split": "test"}},
        {**base, "variant": "b", "config_hash": "h3", "run_dir": "r/runs/b/0", "model": {"key": "1", "asked": "1"}},
        {**base, "variant": "c", "config_hash": "h4", "run_dir": "r/runs/c/0", "model": {"key": "2", "asked": "3"}},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rows = read_results(path)
    assert [(r.variant, r.config_hash, r.split) for r in rows] == [
        ("a", "h1", "valid"),
        ("a", "h2", "test"),
        ("b", "h3", "valid"),
    ]
    said = " ".join(messages())
    assert "line 2 shares its run folder r/runs/a/seed0 with configuration h1" in said
    assert "line 5 was scored with model 2, not the 3 its configuration asks for" in said


@pytest.mark.slow
def test_resume_applies_or_refuses_every_flag_never_drops_one(tmp_path, capsys):
    run = str(tmp_path / "run")
    flags = ["--run-dir", run, "--no-progress", "--set", f"data.root={tmp_path / 'data'}"]
    assert main(["train", "--preset", "tiny", "--steps", "4", "--stop-at-step", "2", *flags]) == 0
    resume = ["train", "--run-dir", run, "--resume", "--no-progress"]
    refused = [
        ["--memory-dtype", "int4"],
        ["--sinks", "sinks=2"],
        ["--compress", "compress=4/2:mean"],
        ["--memory", "8"],
        ["--range", "range=4"],
        ["--attn", "attn=las"],
        ["--same-length"],
        ["--lr", "0.5"],
        ["--batch-size", "3"],
        ["--tgt-len", "4"],
        ["--corpus", "/nonexistent"],
        ["--set", "train.lr=0.5"],
    ]
    for extra in refused:
        capsys.readouterr()
        assert main([*resume, *extra, "--steps", "6"]) == 2, extra
        err = capsys.readouterr().err
        assert extra[0] in err and "would change" in err and len(err.strip().splitlines()) == 1, (extra, err)
    # what does not change the run is applied, and recorded like --steps: the same lr given again, more steps
    assert main([*resume, "--lr", "0.003", "--steps", "6"]) == 0
    assert json.loads(open(run + "/config.json").read())["train"]["steps"] == 6


@pytest.mark.slow
def test_the_command_a_sweep_records_reproduces_its_rows(tmp_path, capsys):
    assert main(_run(tmp_path, "--steps", "6", "--set", "train.lr=0.004")) == 0
    rows = {(r["variant"], r["config_hash"]): r["metrics"] for r in read_jsonl(_results(tmp_path))}
    run = _trained(tmp_path)[0]["run_dir"]
    recorded = open(run + "/command.txt").read().splitlines()[0]
    assert "--set train.lr=0.004" in recorded and "--set train.steps=6" in recorded and "--scale tiny" in recorded
    (tmp_path / "r").rename(tmp_path / "old")
    assert main(shlex.split(recorded)[1:] + ["--no-progress"]) == 0  # pasted into a fresh shell: the same rows
    again = {(r["variant"], r["config_hash"]): r["metrics"] for r in read_jsonl(_results(tmp_path))}
    assert again == rows


def _results(tmp_path):
    return results_path(tmp_path / "r", get_experiment("quickstart", "tiny"))


@pytest.mark.slow
def test_txl_run_takes_a_vocabulary_size_and_keeps_each_in_a_folder_of_its_own(tmp_path, capsys):
    text = tmp_path / "words.txt"
    _text(text, 0, "abc ")  # words of a, b and c: many distinct ones
    for size in (30, 60):
        assert main(_run(tmp_path, "--corpus", str(text), "--tokenizer", "words", "--vocab-size", str(size))) == 0
    folders = sorted(p.name for p in (tmp_path / "r" / "quickstart").iterdir())
    assert [f.rsplit("-", 1)[-1] for f in folders] == ["v30", "v60"]
    vocab = [_trained(tmp_path, folder=f)[0]["data"]["vocab_size"] for f in folders]
    assert vocab[0] < vocab[1]
    run = _trained(tmp_path, folder=folders[1])[0]["run_dir"]
    assert "--tokenizer words --vocab-size 60" in open(run + "/command.txt").read()
    capsys.readouterr()
    assert main(["eval", run, "--no-progress", "--max-segments", "4"]) == 0  # a word model: bpb beside ppl
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("memory plan  cached"))
    assert "  ppl  " in header and "  bpb  " in header
