"""The benchmark commands run and report; their figures are measurements, not test assertions."""

import json

from txl.cli import main


def test_bench_train_compares_plain_and_fast_paths(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert main(["bench", "train", "--preset", "tiny", "--compare", "--memory", "16", "--memory", "lrm=1@last:16,srm=4",
                 "--steps", "2", "--warmup", "1", "--eval-steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "x plain 16" in text and "tokens/s" in text
    data = json.loads(out.read_text())
    assert [r["impl"] for r in data["rows"]] == ["plain", "plain", "plain", "plain"]  # auto is plain on a CPU
    assert [r["memory"] for r in data["rows"]] == ["2x16", "2x16", "1x4,1x16", "1x4,1x16"]
    assert all(r["tokens_per_s"] > 0 and r["eval_tokens_per_s"] > 0 and r["mfu"] is None for r in data["rows"])
    assert data["rows"][0]["flops_per_token"] > data["rows"][2]["flops_per_token"]  # shorter memory, fewer FLOPs


def test_bench_variants_reports_ratios_to_xl(tmp_path, capsys):
    out = tmp_path / "variants.json"
    assert main(["bench", "variants", "--variants", "xl,sikf", "--lengths", "16,32", "--d-model", "32", "--n-head", "2",
                 "--d-head", "16", "--repeats", "1", "--device", "cpu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    xl_row = next(line for line in text.splitlines() if line.startswith("xl "))
    assert xl_row.split()[1:3] == ["1.000", "1.000"]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["attn"], r["seq_len"]) for r in rows} == {("xl", 16), ("xl", 32), ("sikf", 16), ("sikf", 32)}
    assert all(r["seconds"] > 0 for r in rows)


def test_bench_rejects_unknown_names(capsys):
    assert main(["bench", "variants", "--variants", "xl,zzz"]) == 2
    assert "unknown attention variant 'zzz'" in capsys.readouterr().err
    assert main(["bench", "train", "--preset", "tiny", "--impl", "turbo"]) == 2
    assert "unknown --impl 'turbo'" in capsys.readouterr().err
