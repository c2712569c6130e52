"""Training, checkpoints, resume, evaluation with plans, generation, and two-process DDP."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_run, worker_failure
from safetensors.torch import load_file

from txl.cli import main
from txl.core.errors import TxlError
from txl.core.io import read_jsonl
from txl.data import load_corpus
from txl.train import checkpoint as ckpt
from txl.train.loop import Trainer
from txl.train.optim import lr_at
from txl.train.presets import get_preset


class Gadget:
    """Any class at all: a checkpoint holding an instance of one must be refused."""


def train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def weights(run_dir: Path) -> dict:
    return load_file(str(ckpt.find_checkpoint(run_dir) / "model.safetensors"))


@pytest.mark.slow
def test_short_run_beats_the_unigram_baseline(tmp_path):
    """A tiny model learns more than byte frequencies within seconds of CPU training.

    The unigram entropy of these 400k Python-source bytes is about 4.75 bits: what a
    model that learned only byte frequencies gets. We require 0.6 bits below it. For
    scale: exact bigram counts reach about 3.76 bits on this validation split, and 600
    steps of this model about 3.66.
    """
    sets = {
        "train.steps": 600,
        "train.log_every": 100,
        "data.max_tokens": 400_000,
        "train.lr": 3e-3,
        "train.batch_size": 16,
        "train.tgt_len": 32,
        "model.layers.0.mem_len": 32,
        "model.layers.1.mem_len": 32,
    }
    run = tiny_run(tmp_path, **sets)
    result = Trainer(run, tmp_path / "run", progress=False).fit()
    train = np.asarray(load_corpus(run.data, progress=False).splits["train"])
    p = np.bincount(train, minlength=256) / len(train)
    unigram_bits = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    final_bits = result["final"]["bpb"]
    assert final_bits < unigram_bits - 0.6, (final_bits, unigram_bits)
    assert (tmp_path / "run" / "eval.json").exists() and (tmp_path / "run" / "result.json").exists()


@pytest.mark.slow
def test_run_folder_holds_config_command_metrics_and_tensorboard(tmp_path):
    run = tiny_run(tmp_path, **{"train.steps": 20, "train.eval_every": 10, "train.save_every": 10})
    Trainer(run, tmp_path / "run", progress=False, command="txl train --preset tiny").fit()
    folder = tmp_path / "run"
    assert json.loads((folder / "config.json").read_text())["train"]["steps"] == 20
    assert (folder / "command.txt").read_text().strip() == "txl train --preset tiny"
    kinds = {r["kind"] for r in read_jsonl(folder / "metrics.jsonl")}
    assert {"budget", "train", "valid"} <= kinds
    row = next(r for r in read_jsonl(folder / "metrics.jsonl") if r["kind"] == "train")
    assert {"loss", "lr", "tokens_per_s", "grad_norm"} <= set(row)
    assert any(f.name.startswith("events.out.tfevents") for f in (folder / "tb").rglob("*"))
    assert (folder / "tokenizer" / "vocab.json").exists()
    assert (folder / "checkpoints" / "last").is_symlink() and (folder / "checkpoints" / "best").is_symlink()
    with pytest.raises(TxlError, match="already holds a run; continue it with --resume"):
        Trainer(run, folder, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("accum", [1, 2])
def test_resume_gives_identical_losses_and_weights(tmp_path, accum):
    sets = {
        "train.steps": 24,
        "train.log_every": 1,
        "model.dropout": 0.1,
        "model.dropatt": 0.1,
        "train.grad_accum": accum,
        "train.warmup": 5,
        "data.max_tokens": 20_000,
    }
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "straight", progress=False).fit()
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "split", progress=False).fit(stop_at=12)
    assert len(train_losses(tmp_path / "split")) == 12
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "split", resume=True, progress=False).fit()
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")  # exactly
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ctrl_c_mid_step_saves_the_last_whole_step_and_resumes_exactly(tmp_path, monkeypatch):
    sets = {"train.steps": 16, "train.log_every": 1, "model.dropout": 0.1, "data.max_tokens": 20_000}
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "straight", progress=False).fit()
    trainer = Trainer(tiny_run(tmp_path, **sets), tmp_path / "cut", progress=False)
    real = trainer.model.forward
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 9:  # inside step 9, after its forward has changed the memory
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(trainer.model, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert ckpt.read_meta(ckpt.find_checkpoint(tmp_path / "cut"))["step"] == 8
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "cut", resume=True, progress=False).fit()
    assert train_losses(tmp_path / "cut") == train_losses(tmp_path / "straight")


def signal_inside_the_update(trainer, monkeypatch, at_step: int, times: int) -> None:
    """Send SIGINT `times` times from inside the parameter update of step `at_step` (1-based), once the
    weights have changed and before the update returns: a Ctrl-C that used to save a half-applied step."""
    opt = trainer.step_fn.optimizer
    real = opt.step
    calls = {"n": 0}

    def step(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        if calls["n"] == at_step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(opt, "step", step)


@pytest.mark.slow
def test_ctrl_c_inside_the_update_finishes_the_step_then_saves_and_resumes_exactly(tmp_path, monkeypatch):
    sets = {"train.steps": 16, "train.log_every": 5, "model.dropout": 0.1, "data.max_tokens": 20_000}
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "straight", progress=False).fit()
    trainer = Trainer(tiny_run(tmp_path, **sets), tmp_path / "cut", progress=False)
    signal_inside_the_update(trainer, monkeypatch, at_step=7, times=1)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert ckpt.read_meta(ckpt.find_checkpoint(tmp_path / "cut"))["step"] == 7  # the whole step, not a half-applied one
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "cut", resume=True, progress=False).fit()
    # the loss log (rows at 5, 10, 15, 16: the row at 10 spans the resume) and the weights equal the uninterrupted run's
    assert train_losses(tmp_path / "cut") == train_losses(tmp_path / "straight")
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_second_ctrl_c_inside_the_update_stops_at_once_without_saving_a_half_step(tmp_path, monkeypatch):
    from txl.core.signals import StopRequests

    monkeypatch.setattr(StopRequests, "GRACE", 0.0)  # a repeat within the grace period counts as the same Ctrl-C
    sets = {"train.steps": 16, "train.save_every": 4, "data.max_tokens": 20_000}
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "straight", progress=False).fit()
    trainer = Trainer(tiny_run(tmp_path, **sets), tmp_path / "cut", progress=False)
    signal_inside_the_update(trainer, monkeypatch, at_step=7, times=2)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert ckpt.read_meta(ckpt.find_checkpoint(tmp_path / "cut"))["step"] == 4  # the last whole checkpoint stands
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "cut", resume=True, progress=False).fit()
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    run = tiny_run(tmp_path, **{"train.steps": 12, "train.save_every": 4})
    trainer = Trainer(run, tmp_path / "run", progress=False)
    real_save = torch.save
    saves = {"n": 0}

    class Killed(BaseException):
        """A hard kill: nothing in txl gets to run after it (Ctrl-C would save again)."""

    def dying_save(obj, path, *a, **k):
        saves["n"] += 1
        if saves["n"] == 2:  # the second checkpoint dies half-written
            if hasattr(path, "write"):  # txl saves through a file it opened (checkpoint.save_tensors)
                path.write(b"partial")
            else:
                Path(path).write_bytes(b"partial")
            raise Killed
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(Killed):
        trainer.fit()
    monkeypatch.setattr(torch, "save", real_save)
    folder = ckpt.find_checkpoint(tmp_path / "run")
    assert ckpt.read_meta(folder)["step"] == 4
    assert ckpt.load_state(folder)["step"] == 4
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    # and the run resumes from it
    result = Trainer(
        tiny_run(tmp_path, **{"train.steps": 12, "train.save_every": 4}), tmp_path / "run", resume=True, progress=False
    ).fit()
    assert result["step"] == 12


@pytest.mark.slow
def test_checkpoints_hold_no_pickled_objects(tmp_path):
    Trainer(tiny_run(tmp_path, **{"train.steps": 4}), tmp_path / "run", progress=False).fit()
    state = ckpt.load_state(ckpt.find_checkpoint(tmp_path / "run"))  # weights_only=True
    assert state["step"] == 4 and isinstance(state["rng"][0]["torch"], torch.Tensor)
    evil = tmp_path / "evil"
    evil.mkdir()
    for name in ("model.safetensors", "meta.json", "config.json"):
        (evil / name).write_bytes((ckpt.find_checkpoint(tmp_path / "run") / name).read_bytes())
    torch.save({"payload": Gadget()}, evil / "state.pt")
    with pytest.raises(TxlError, match="not a txl checkpoint"):
        ckpt.load_state(evil)


def test_learning_rate_schedule():
    run = get_preset("tiny")
    run.train.steps, run.train.warmup, run.train.lr, run.train.min_lr = 100, 10, 1.0, 0.1
    assert lr_at(0, run.train) == pytest.approx(0.1) and lr_at(9, run.train) == pytest.approx(1.0)
    assert lr_at(10, run.train) == pytest.approx(1.0) and lr_at(100, run.train) == pytest.approx(0.1)
    assert lr_at(55, run.train) == pytest.approx(0.55)


@pytest.mark.slow
def test_flex_training_on_a_cpu_is_refused_up_front(tmp_path):
    run = tiny_run(tmp_path, **{"model.attn_impl": "flex"})
    with pytest.raises(TxlError, match="attn_impl=flex cannot train on a CPU"):
        Trainer(run, tmp_path / "run", progress=False)


def test_the_original_learning_rate_schedule():
    """Dai et al.'s code sets the rate after each step: step 0 at the full rate, decay counted from step 0."""
    run = get_preset("tiny")
    run.train.steps, run.train.warmup, run.train.lr, run.train.min_lr = 100, 10, 1.0, 0.1
    run.train.schedule_rule = "original"
    assert (
        lr_at(0, run.train) == 1.0
        and lr_at(1, run.train) == pytest.approx(0.1)
        and lr_at(9, run.train) == pytest.approx(0.9)
    )
    assert lr_at(10, run.train) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert lr_at(50, run.train) == pytest.approx(0.55) and lr_at(100, run.train) == pytest.approx(0.1)


@pytest.mark.slow
def test_eval_compares_memory_plans_in_one_command(tmp_path, capsys):
    Trainer(tiny_run(tmp_path, **{"train.steps": 30}), tmp_path / "run", progress=False).fit()
    assert main(["eval", str(tmp_path / "run"), "--memory", "0", "--memory", "32", "--json", "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    (short, long) = data["results"]
    assert short["plan"] == "0" and long["plan"] == "32"
    assert short["cached_positions"] == 0 and long["cached_positions"] == 64
    assert short["loss"] != long["loss"] and len(short["loss_by_position"]) == 16
    for r in (short, long):  # the blocks partition the scored tokens
        assert sum(r["blocks"]["tokens"]) == r["tokens"]
        assert sum(r["blocks"]["loss"]) / r["tokens"] == pytest.approx(r["loss"], rel=1e-12)
    assert main(["eval", str(tmp_path / "run"), "--memory", "0", "--memory", "32", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "loss by position within the segment" in out and out.count("bpb") >= 1


@pytest.mark.slow
def test_eval_protocol_sets_the_published_settings_and_flags_win(tmp_path, capsys):
    run = tiny_run(tmp_path, **{"train.steps": 4})
    Trainer(run, tmp_path / "run", progress=False).fit()
    folder = str(tmp_path / "run")
    assert (
        main(
            [
                "eval",
                folder,
                "--protocol",
                "wt103-base",
                "--tgt-len",
                "16",
                "--max-segments",
                "2",
                "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert r["tgt_len"] == 16 and r["split"] == "test"  # the flag beside the protocol wins
    assert r["cached_positions"] == 640 * run.model.n_layer  # the protocol's memory
    assert main(["eval", folder, "--protocol", "wt103-base", "--max-segments", "1", "--no-progress"]) == 0
    assert "protocol wt103-base: segments of 64, memory 640, clamp_len 400, same_length on" in capsys.readouterr().out
    assert main(["eval", folder, "--protocol", "nope"]) == 2
    assert "unknown protocol 'nope' (known: enwik8-base" in capsys.readouterr().err


@pytest.mark.slow
def test_generate_samples_text_with_memory(tmp_path, capsys):
    Trainer(tiny_run(tmp_path, **{"train.steps": 10}), tmp_path / "run", progress=False).fit()
    assert (
        main(["generate", str(tmp_path / "run"), "--prompt", "def ", "--tokens", "40", "--top-k", "5", "--seed", "3"])
        == 0
    )
    first = capsys.readouterr().out
    assert first.startswith("def ") and len(first) > 10
    assert (
        main(["generate", str(tmp_path / "run"), "--prompt", "def ", "--tokens", "40", "--top-k", "5", "--seed", "3"])
        == 0
    )
    assert capsys.readouterr().out == first  # seeded


@pytest.mark.slow
def test_train_command_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--preset", "nope"]) == 2
    assert "unknown preset 'nope' (known: enwik8-base" in capsys.readouterr().err
    assert main(["train", "--resume"]) == 2
    assert "--resume needs --run-dir" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny", "--set", "train.batch_size=5", "--set", "train.grad_accum=2"]) == 2
    assert "train.batch_size (5) must be a multiple of train.grad_accum (2)" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint found" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    """torchrun with two gloo processes of batch 2 follows the same loss curve as one process of batch 4."""
    common = [
        "--preset",
        "tiny",
        "--steps",
        "8",
        "--no-progress",
        "--device",
        "cpu",
        "--set",
        f"data.root={tmp_path / 'data'}",
        "--set",
        "train.log_every=1",
        "--set",
        "data.max_tokens=20000",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "txl", "train", "--run-dir", str(tmp_path / "one"), "--batch-size", "4", *common],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",
            "-m",
            "txl",
            "train",
            "--run-dir",
            str(tmp_path / "two"),
            "--batch-size",
            "2",
            *common,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert two.returncode == 0, worker_failure(two)
    a, b = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(a) == len(b) == 8
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5), (a, b)
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-3, atol=1e-5) for k in wa)


@pytest.mark.slow
def test_eval_on_another_corpus_reads_it_with_the_runs_own_tokenizer(tmp_path, capsys):
    from txl.config import DataConfig
    from txl.data.corpora import fetch_local
    from txl.data.tokenizers import WordTokenizer, load_tokenizer

    def corpus(name, words, seed):
        rng = np.random.default_rng(seed)
        folder = tmp_path / name
        folder.mkdir()
        for split, n in (("train", 4000), ("valid", 400), ("test", 400)):
            lines = [" ".join(rng.choice(words, 8)) for _ in range(n // 8)]
            (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
        return folder

    ours = corpus("ours", [f"w{i}" for i in range(30)], 0)
    other = corpus(
        "other", [f"w{i}" for i in range(15)] + [f"x{i}" for i in range(15)], 1
    )  # as many words, half unknown
    assert (
        WordTokenizer.build((other / "train.txt").read_bytes()).vocab_size
        == WordTokenizer.build((ours / "train.txt").read_bytes()).vocab_size
    )
    run = tiny_run(tmp_path, **{"train.steps": 2, "data.corpus": str(ours), "data.tokenizer": "words"})
    Trainer(run, tmp_path / "run", progress=False).fit()
    assert (
        main(["eval", str(tmp_path / "run"), "--corpus", str(other), "--max-segments", "1", "--json", "--no-progress"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    tokenizer = load_tokenizer(tmp_path / "run" / "tokenizer" / "vocab.json")
    split = out["results"][0]["split"]
    assert split == "whole"  # another text is scored whole: its three parts in order
    raws = fetch_local(other, DataConfig(corpus=str(other))).splits  # the evaluated text as the loader reads it
    expected = np.concatenate([tokenizer.encode(raws[s]) for s in ("train", "valid", "test")])
    assert out["unknown_tokens"] == int((expected == tokenizer.unk_id).sum()) > 0
    used = load_corpus(
        DataConfig(corpus=str(other), tokenizer=str(tmp_path / "run" / "tokenizer" / "vocab.json"), root=run.data.root),
        progress=False,
    ).with_whole()
    assert np.array_equal(
        np.array(used.splits[split]), expected
    )  # the run's ids, not a vocabulary rebuilt from the other text
    assert main(["eval", str(tmp_path / "run"), "--corpus", str(other), "--max-segments", "1", "--no-progress"]) == 0
    assert "read as the unknown symbol" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_keeps_its_results_exports_them_and_compare_puts_runs_side_by_side(tmp_path, capsys):
    for name in ("a", "b"):
        Trainer(
            tiny_run(tmp_path, **{"train.steps": 3, "train.seed": ord(name)}), tmp_path / name, progress=False
        ).fit()
        assert (
            main(
                [
                    "eval",
                    str(tmp_path / name),
                    "--memory",
                    "0",
                    "--memory",
                    "16",
                    "--max-segments",
                    "2",
                    "--no-progress",
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "saved" in out and "receptive field (guaranteed)" in out
    rows = read_jsonl(tmp_path / "a" / "evals.jsonl")
    assert [r["plan"] for r in rows] == ["0", "16"] and all(r["corpus"] == "pystdlib" and "bpb" in r for r in rows)
    saved = sorted((tmp_path / "a" / "evals").iterdir())
    assert [p.suffix for p in saved] == [".json", ".md"] and "| memory plan |" in saved[1].read_text()
    assert (
        main(["eval", str(tmp_path / "a"), "--memory", "0", "--max-segments", "1", "--format", "csv", "--no-progress"])
        == 0
    )
    csv_out = capsys.readouterr().out.splitlines()
    assert csv_out[0].startswith("memory plan,cached,MiB/seq") and csv_out[1].startswith("0,0,")
    assert (
        main(
            ["eval", str(tmp_path / "a"), "--memory", "0", "--max-segments", "1", "--format", "latex", "--no-progress"]
        )
        == 0
    )
    assert "\\begin{tabular}" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count(str(tmp_path / "a")) >= 2 and out.count(str(tmp_path / "b")) >= 2  # each run, each plan
    assert (tmp_path / "compare.png").stat().st_size > 0 and (tmp_path / "compare.csv").read_text().startswith("run,")
    assert main(["compare", str(tmp_path / "nothing")]) == 2


@pytest.mark.slow
def test_a_run_folder_records_versions_its_commands_and_a_banner(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--steps",
                "2",
                "--run-dir",
                str(tmp_path / "run"),
                "--no-progress",
                "--set",
                f"data.root={tmp_path / 'data'}",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert (
        "training  " in err
        and "parameters" in err
        and "device     cpu x 1, fp32" in err
        and "capped at data.max_tokens" in err
    )
    versions = json.loads((tmp_path / "run" / "versions.json").read_text())
    assert versions["torch"] == torch.__version__ and versions["txl"]
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--resume", "--steps", "3", "--no-progress"]) == 0
    command = (tmp_path / "run" / "command.txt").read_text()
    assert "--steps 2" in command and "# resumed at step 2:" in command and "--resume --steps 3" in command


@pytest.mark.slow
def test_word_generation_keeps_the_prompt_a_line_apart_from_nothing(tmp_path, capsys):
    folder = tmp_path / "words"
    folder.mkdir()
    for split, n in (("train", 600), ("valid", 60), ("test", 60)):
        (folder / f"{split}.txt").write_text("\n".join("the cat sat on the mat" for _ in range(n // 6)) + "\n")
    run = tiny_run(tmp_path, **{"train.steps": 2, "data.corpus": str(folder), "data.tokenizer": "words"})
    Trainer(run, tmp_path / "run", progress=False).fit()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the cat", "--tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the cat ") and not out.startswith("the cat\n")  # a space, not glued, and no line ended


@pytest.mark.slow
def test_ctrl_c_during_the_final_evaluation_leaves_a_run_that_resumes_to_the_end(tmp_path, monkeypatch):
    import txl.train.loop

    sets = {"train.steps": 6, "train.save_every": 3}
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "straight", progress=False).fit()
    real = txl.train.loop.evaluate

    def interrupted(*a, **k):
        if k.get("plan") is not None or len(a) > 3:  # the final evaluation (the one with the run's evaluation plan)
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(txl.train.loop, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_run(tmp_path, **sets), tmp_path / "cut", progress=False).fit()
    assert (
        not (tmp_path / "cut" / "result.json").exists()
        and ckpt.read_meta(ckpt.find_checkpoint(tmp_path / "cut"))["step"] == 6
    )
    monkeypatch.setattr(txl.train.loop, "evaluate", real)
    result = Trainer(tiny_run(tmp_path, **sets), tmp_path / "cut", resume=True, progress=False).fit()
    assert result["final"] is not None and (tmp_path / "cut" / "result.json").exists()
    assert train_losses(tmp_path / "cut") == train_losses(tmp_path / "straight")
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adam_updates_in_one_fused_kernel_on_a_gpu_only():
    from types import SimpleNamespace

    from txl.config import TrainConfig
    from txl.train.optim import fused_update, make_optimizer

    model = torch.nn.Linear(3, 2)
    assert not fused_update(list(model.parameters()))
    assert not make_optimizer(model, TrainConfig()).defaults.get("fused")  # CPU: torch's default, as parity needs
    cuda = SimpleNamespace(is_cuda=True, is_floating_point=lambda: True)
    assert fused_update([cuda, cuda]) and not fused_update(
        [cuda, SimpleNamespace(is_cuda=False, is_floating_point=lambda: True)]
    )
    assert not fused_update([])


@pytest.mark.gpu
def test_adam_is_fused_on_a_gpu():
    from txl.config import TrainConfig
    from txl.train.optim import make_optimizer

    for name in ("adam", "adamw"):
        assert make_optimizer(torch.nn.Linear(3, 2).cuda(), TrainConfig(optimizer=name)).defaults["fused"] is True


def test_resuming_keeps_this_machines_choice_of_fused_adam():
    """A checkpoint's optimizer groups carry the saving machine's `fused` flag; loading must not restore it (a GPU
    checkpoint resumed on a CPU would switch to CPU fused Adam, away from torch's default that parity relies on)."""
    from txl.config import TrainConfig
    from txl.train.optim import TrainStep

    model = torch.nn.Linear(3, 2)
    step = TrainStep(model, model, TrainConfig(), torch.device("cpu"), "fp32")
    saved = step.state_dict()
    saved["optimizer"]["param_groups"][0]["fused"] = True  # as a GPU run saves it
    step.load_state_dict(saved)
    assert not step.optimizer.param_groups[0]["fused"]
    assert saved["optimizer"]["param_groups"][0]["fused"] is True  # the caller's dict is not changed
