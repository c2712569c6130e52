"""A researcher's second week: runs that stay finished, whole files scored, results found, times foretold."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_run

from txl.cli import main
from txl.train.loop import Trainer


def _steps_done(folder) -> int:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return max(r["step"] for r in rows if "step" in r)


def test_steps_changed_on_resume_are_recorded_and_a_finished_run_trains_nothing(tmp_path, capsys):
    run = tiny_run(tmp_path, **{"train.steps": 4, "train.log_every": 1})
    Trainer(run, tmp_path / "run", progress=False).fit()
    argv = ["train", "--run-dir", str(tmp_path / "run"), "--resume", "--no-progress"]
    assert main([*argv, "--steps", "6"]) == 0
    err = capsys.readouterr().err
    assert "resume changes train.steps: 4 -> 6 (recorded in config.json)" in err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["steps"] == 6
    assert _steps_done(tmp_path / "run") == 6
    assert main(argv) == 0  # finished at its recorded 6 steps: nothing more
    assert "the run is at step 6, train.steps is 6: nothing to train" in capsys.readouterr().err
    assert _steps_done(tmp_path / "run") == 6


def test_eval_of_another_file_scores_it_whole(tmp_path, capsys):
    from txl.train.runs import load_trained

    run = tiny_run(tmp_path, **{"train.steps": 2})
    Trainer(run, tmp_path / "run", progress=False).fit()
    text = tmp_path / "other.py"
    text.write_text("".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(300)))
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--corpus", str(text), "--json"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out)
    size = len(text.read_bytes())
    assert record["split"] == "whole" and record["data"]["tokens"]["whole"] == size  # every byte of the file, once
    assert record["results"][0]["tokens"] > 0.95 * size  # scored all of it (but the ragged end of the streams)
    trained = load_trained(tmp_path / "run")
    assert trained.spec(corpus=str(text)).split == "whole"
    assert trained.spec(corpus=str(text), split="valid").split == "valid"  # a split asked for is kept
    assert trained.spec().split == "valid"  # the run's own text: its eval split, as before
    assert main(["eval", str(tmp_path / "run"), "--corpus", str(text), "--no-progress"]) == 0
    scored = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("scored"))
    assert f"of the {size:,} bytes" in scored and "ragged end" in scored  # what was left out, and why


def test_report_names_the_results_a_corpus_run_made(tmp_path, capsys):
    from dataclasses import replace

    from conftest import result_rows

    import experiments  # noqa: F401
    from txl.study.results import append_result

    (row,) = result_rows({"variant": "v", "seed": 0, "kind": "train", "metrics": {"bpb": 2.0, "split": "valid"}})
    data = {"corpus": "novel.txt", "source": "/texts/novel.txt", "tokenizer": "bytes", "tokens": {"valid": 10}}
    append_result(tmp_path / "quickstart" / "tiny-on-novel.txt-abc123" / "results.jsonl", replace(row, data=data))
    assert main(["report", "quickstart", "--scale", "tiny", "--results", str(tmp_path), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "txl report quickstart --scale tiny --corpus /texts/novel.txt" in err and len(err.strip().splitlines()) == 1
    assert main(["report", "quickstart", "--scale", "small", "--results", str(tmp_path), "--no-plot"]) == 2
    assert f"run 'txl run quickstart --scale small --results {tmp_path}' first" in capsys.readouterr().err


def test_a_stopped_sweep_says_to_run_the_sweep_again(tmp_path, monkeypatch):
    from txl.study.registry import Experiment, Variant
    from txl.study.sweep import run_experiment

    hints = []
    real = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, stop_at=None: hints.append(self.resume_hint) or real(self))
    exp = Experiment("tiny", tiny_run(tmp_path, **{"train.steps": 1}), [Variant("v", memory="4")], name="test/hint")
    run_experiment(exp, tmp_path / "results", progress=False)
    assert hints == ["txl run test/hint --scale tiny (done jobs are skipped, this one resumes)"]
    exp.command = "txl run test/hint --scale tiny --results R --set train.steps=2"  # what txl run and jobs set
    exp.base.train.steps = 2
    run_experiment(exp, tmp_path / "results", progress=False)
    assert hints[-1] == f"{exp.command} (done jobs are skipped, this one resumes)"
    assert Trainer(tiny_run(tmp_path), tmp_path / "solo", progress=False).resume_hint == (
        f"txl train --run-dir {tmp_path / 'solo'} --resume"
    )


def test_sweeps_and_training_say_how_long_is_left(tmp_path, messages, capsys):
    from txl.core.table import clock
    from txl.study.registry import Experiment, Variant
    from txl.study.sweep import run_experiment

    assert [clock(s) for s in (4.6, 200, 7500)] == ["5 s", "3 min 20 s", "2 h 05 min"]
    exp = Experiment(
        "tiny",
        tiny_run(tmp_path, **{"train.steps": 2}),
        [Variant("a", memory="4"), Variant("b", memory="8"), Variant("a cut", of="a", memory="2")],
        name="test/pace",
    )
    run_experiment(exp, tmp_path / "results", progress=False)
    said = [m for m in messages() if m.startswith("[")]
    assert said[0].startswith("[1/3] ") and "elapsed, about" in said[1] and "elapsed, about" in said[-1]
    # after the first training job, the evaluation is of a kind not yet timed: counted, not guessed at its pace
    assert "and 1 jobs of a kind not yet timed" in said[1] and "not yet timed" not in said[-1]
    run = tiny_run(tmp_path, **{"train.steps": 20, "train.log_every": 2})
    Trainer(run, tmp_path / "run", progress=False).fit()
    paced = [line for line in capsys.readouterr().err.splitlines() if " left at this pace" in line]
    assert [line.split(":")[0] for line in paced] == [f"step {s} of 20" for s in (2, 4, 6, 8, 10, 12, 14, 16, 18)]


def test_compare_keeps_splits_and_corpora_apart(tmp_path):
    from txl.core.errors import TxlError
    from txl.core.io import append_line
    from txl.study.compare import compare, compare_rows, plot_lines

    for run in ("a", "b"):
        for split, corpus, bpb in (("valid", "pystdlib", 2.0), ("test", "pystdlib", 2.1), ("whole", "novel", 3.0)):
            for plan, cached in (("0", 0), ("16", 32)):
                row = {"plan": plan, "split": split, "corpus": corpus, "metric": "bpb", "bpb": bpb, "loss": 1.0}
                (tmp_path / run).mkdir(exist_ok=True)
                append_line(
                    tmp_path / run / "evals.jsonl", json.dumps({**row, "cached_positions": cached, "tokens": 10})
                )
    runs = [tmp_path / "a", tmp_path / "b"]
    _, rows, _ = compare_rows(runs)
    assert len(plot_lines(rows)) == 6  # 2 runs x 3 kinds of text, each a line of its own
    assert all(len(points) == 2 for _, _, points in plot_lines(rows))
    _, tested, _ = compare_rows(runs, split="test")
    assert {r[3] for r in tested} == {"test"} and len(tested) == 4
    labels = [label for label, _, _ in plot_lines(tested)]  # no absolute local path in a figure
    assert labels == [f"{tmp_path.name}/a", f"{tmp_path.name}/b"] and not any(str(tmp_path) in x for x in labels)
    out = compare(runs, tmp_path, plot=True, split="valid")
    assert out["table"].count(" valid ") == 4 and " test " not in out["table"]
    assert (tmp_path / "compare.png").stat().st_size > 0
    with pytest.raises(TxlError, match="no saved evaluation of the test split"):
        compare_rows([tmp_path / "a", _only_valid(tmp_path)], split="test")


def _only_valid(tmp_path):
    from txl.core.io import append_line

    row = {"plan": "0", "split": "valid", "corpus": "pystdlib", "metric": "bpb", "bpb": 2.0, "loss": 1.0}
    (tmp_path / "c").mkdir()
    append_line(tmp_path / "c" / "evals.jsonl", json.dumps(row))
    return tmp_path / "c"


def test_outputs_about_a_run_go_under_the_run_and_its_data_root_is_its_own(tmp_path, monkeypatch, capsys):
    run = tiny_run(tmp_path, **{"train.steps": 2})
    run.data.root = None  # the default: resolved once, when training starts, and recorded
    monkeypatch.chdir(tmp_path)
    Trainer(run, tmp_path / "run", progress=False).fit()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]["root"]
    assert saved == str((tmp_path / "data" / "cache").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = ["analyze", "context", str(tmp_path / "run"), "--lengths", "4,16", "--windows", "2"]
    assert main(argv) == 0
    assert (tmp_path / "run" / "analysis" / "context.json").is_file()
    assert (tmp_path / "run" / "analysis" / "context.png").is_file()
    assert not any(elsewhere.iterdir())  # nothing written here, no token cache rebuilt here either


def test_odd_data_is_named_small_text_bad_bytes_folder_splits_and_borrowed_names(tmp_path, messages):
    from txl.config import DataConfig
    from txl.data import load_corpus

    tiny = tmp_path / "tiny.txt"
    tiny.write_bytes(b"a few words\n" * 30 + b"\xff\xfe bad bytes\n" * 2)
    corpus = load_corpus(DataConfig(corpus=str(tiny), tokenizer="chars", root=str(tmp_path / "c")), progress=False)
    said = " ".join(messages())
    assert "corpus tiny.txt is small (valid" in said and "4 bytes of tiny.txt are not UTF-8" in said
    assert corpus.name == "tiny.txt"
    folder = tmp_path / "ptb"  # a user's folder named like a built-in corpus
    folder.mkdir()
    for i in range(4):
        (folder / f"part{i}.txt").write_text(f"text of part {i}\n" * 400)
    messages.clear()
    corpus = load_corpus(DataConfig(corpus=str(folder), root=str(tmp_path / "c")), progress=False)
    assert corpus.name == str(folder) and corpus.name != "ptb"
    assert any(f"folder {folder} split by file: 2 train, 1 valid, 1 test" in m for m in messages())


def test_a_mistyped_flag_is_answered_with_the_closest_ones(capsys):
    for argv in (["train", "--memmory", "4"], ["budget", "--zzz"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    first, second = capsys.readouterr().err.strip().splitlines()
    assert "unrecognized arguments: --memmory 4; did you mean --memory" in first
    assert "unrecognized arguments: --zzz (see" in second


def test_a_report_says_when_variants_have_different_numbers_of_seeds(tmp_path):
    from conftest import result_rows

    from txl.study.report import build_report

    rows = result_rows(
        *[{"variant": "a", "seed": s, "kind": "train", "metrics": {"bpb": 2.0 + s / 100}} for s in range(2)],
        {"variant": "b", "seed": 0, "kind": "train", "metrics": {"bpb": 2.1}},
    )
    report = build_report(rows, "t", tmp_path, plot=False)
    assert "seeds differ between variants: 1 over 1 (b); 1 over 2 (a)" in report["legend"]
    assert "seeds differ" not in build_report(rows[:2], "t", tmp_path, plot=False)["legend"]


def test_evaluations_recorded_in_the_same_second_each_keep_their_record(tmp_path):
    from txl.train.run_evals import record_evaluation

    (tmp_path / "run").mkdir()
    record = {"split": "valid", "results": [{"loss": 1.0, "plan": "0"}]}
    paths = {record_evaluation(tmp_path / "run", record, "table") for _ in range(3)}
    assert len(paths) == 3 and len(list((tmp_path / "run" / "evals").glob("*.json"))) == 3
    assert len((tmp_path / "run" / "evals.jsonl").read_text().splitlines()) == 3


def test_csv_and_latex_print_the_table_alone(tmp_path, capsys):
    import csv
    import io
    from dataclasses import replace

    from conftest import result_rows

    import experiments  # noqa: F401
    from txl.study.registry import get_experiment, results_path
    from txl.study.results import append_result

    exp = get_experiment("quickstart", "tiny")
    for row in result_rows(*[{"variant": v, "seed": 0, "kind": "train", "metrics": {"bpb": 2.0}} for v in "ab"]):
        append_result(results_path(tmp_path, exp), replace(row, experiment=exp.name))
    argv = ["report", "quickstart", "--scale", "tiny", "--results", str(tmp_path), "--no-plot", "--pairs"]
    assert main([*argv, "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    table = list(csv.reader(io.StringIO(out)))
    assert table[0][:2] == ["group", "variant"] and len(table) == 3 and len({len(r) for r in table}) == 1
    assert "pairs" in err and "markdown" in err  # the files it wrote, named on stderr
    assert main([*argv, "--format", "latex"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("\\begin{tabular}") and out.endswith("\\end{tabular}")


def test_generate_says_when_the_prompt_has_words_the_model_does_not_know(tmp_path, capsys):
    folder = tmp_path / "words"
    folder.mkdir()
    for split, n in (("train", 3000), ("valid", 300), ("test", 300)):
        (folder / f"{split}.txt").write_text("the cat sat on the mat\n" * (n // 6))
    run = tiny_run(tmp_path, **{"train.steps": 1, "data.corpus": str(folder), "data.tokenizer": "words"})
    Trainer(run, tmp_path / "run", progress=False).fit()
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the zebra sat", "--tokens", "2"]) == 0
    assert "note: 1 of the prompt's tokens are not in the model's vocabulary" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the cat", "--tokens", "2"]) == 0
    assert "not in the model's vocabulary" not in capsys.readouterr().err


def test_eval_in_a_read_only_run_folder_prints_its_results_then_names_what_it_could_not_save(
    tmp_path, monkeypatch, capsys
):
    import txl.train.run_evals

    Trainer(tiny_run(tmp_path, **{"train.steps": 1}), tmp_path / "run", progress=False).fit()

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(txl.train.run_evals, "record_evaluation", read_only)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--max-segments", "2", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "memory plan" in out and "as trained" in out  # the results, printed
    expected = f"txl eval: error: could not save the evaluation in {tmp_path / 'run'} (Read-only file system)"
    assert err.strip() == expected


def test_compare_leaves_out_saved_rows_of_the_wrong_types_and_says_so(tmp_path, messages):
    from txl.core.io import append_line
    from txl.study.compare import compare_rows

    (tmp_path / "a").mkdir()
    good = {"plan": "0", "split": "valid", "corpus": "c", "metric": "bpb", "bpb": 2.0, "loss": 1.0, "tokens": 10}
    bad = [{**good, "plan": "8", "loss": "abc"}, {**good, "plan": "16", "tokens": [1]}, [1, 2]]
    bad += [{**good, "corpus": [1]}, {**good, "corpus": {"a": 1}}, {**good, "metric": [1]}, {**good, "split": 3}]
    for row in (good, *bad):
        append_line(tmp_path / "a" / "evals.jsonl", json.dumps(row))
    _, rows, _ = compare_rows([tmp_path / "a"])
    assert [r[1] for r in rows] == ["0"]
    said = messages()
    assert sum("does not hold the right types" in m for m in said) == 6 and any("line 4" in m for m in said)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "RUN", "--memory-dtype", "int8", "--memory-dtype", "int4"],
        ["train", "--preset", "tiny", "--sinks", "sinks=2", "--sinks", "sinks=4"],
        ["budget", "--range", "range=4", "--range", "range=8"],
        ["train", "--preset", "tiny", "--compress", "compress=4/2:mean", "--compress", "0"],
    ],
)
def test_a_plan_flag_given_twice_is_refused_not_half_dropped(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "given twice" in err and argv[-1] in err and len(err.strip().splitlines()) == 1


def test_compare_takes_runs_of_one_text_with_other_tokenizers_in_bytes_and_keeps_segments_apart(tmp_path, messages):
    from txl.core.io import append_line
    from txl.study.compare import compare, compare_rows, plot_lines

    for run, metric, value in (("bytes", "bpb", 2.0), ("words", "ppl", 90.0)):
        (tmp_path / run).mkdir()
        for plan, cached, mib, tgt_len in (("0", 0, 0.0, 16), ("16", 32, 0.5, 16), ("16", 32, 0.5, 32)):
            row = {"plan": plan, "split": "valid", "corpus": "novel", "metric": metric, metric: value, "bpb": 2.0}
            row |= {"loss": 1.0, "cached_positions": cached, "memory_mib": mib, "tgt_len": tgt_len, "tokens": 10}
            append_line(tmp_path / run / "evals.jsonl", json.dumps(row))
    runs = [tmp_path / "bytes", tmp_path / "words"]
    headers, rows, metric = compare_rows(runs, x="bytes")
    assert metric == "bpb" and "MiB/seq" in headers and any("bits per byte" in m for m in messages())
    lines = plot_lines(rows)  # two runs x two segment lengths; each point names its plan
    assert len(lines) == 4 and any("segments of 32" in label for label, _, _ in lines)
    assert {plan for _, _, points in lines for _, _, plan in points} == {"0", "16"}
    assert compare(runs, tmp_path, plot=True, x="bytes")["files"]["png"].stat().st_size > 0
