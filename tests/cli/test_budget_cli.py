import json

import pytest

from txl.cli import main
from txl.config import ModelConfig
from txl.model.budget import budget, param_count
from txl.model.plans import apply_plans


def test_budget_shows_six_times_less_long_range_memory(capsys):
    assert (
        main(
            [
                "budget",
                "--layers",
                "24",
                "--d-model",
                "1024",
                "--memory",
                "24x2304",
                "--memory",
                "lrm=4@interleave:2304,srm=128",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("lrm=4@interleave:2304,srm=128"))
    assert "6.0x" in row and "9,216" in row and "11,776" in row


def test_budget_json_numbers():
    cfg_all = apply_plans(ModelConfig(n_layer=24, d_model=1024, d_inner=4096, d_head=128), memory="24x2304")
    cfg_lrm = apply_plans(cfg_all, memory="lrm=4@interleave:2304,srm=128")
    all_, lrm = budget(cfg_all, 512), budget(cfg_lrm, 512)
    assert all_.long_range_positions == 24 * 2304 and lrm.long_range_positions == 4 * 2304
    assert all_.long_range_positions / lrm.long_range_positions == 6
    assert lrm.cached_positions == 4 * 2304 + 20 * 128
    assert lrm.bytes == lrm.cached_positions * 1024 * 4


def test_budget_prints_the_enwik8_base_parameter_count(capsys):
    assert main(["budget", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 41_082_112 == param_count(ModelConfig())
    assert main(["budget"]) == 0
    assert "parameters       41,082,112" in capsys.readouterr().out


def test_budget_per_layer_table_and_totals(capsys):
    assert (
        main(
            [
                "budget",
                "--layers",
                "4",
                "--memory",
                "lrm=1@last:64,srm=8",
                "--range",
                "range=4@first:1",
                "--tgt-len",
                "16",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["layer", "attn", "mem_len", "range"]
    assert lines[2].split()[:5] == ["0", "xl", "8", "4", "8"]
    assert lines[5].split()[:5] == ["3", "xl", "64", "inf", "64"]
    assert lines[6].split()[:2] == ["total", "88"]


def test_budget_with_config_file_and_set(tmp_path, capsys):
    from txl.config import RunConfig, save_config

    save_config(
        RunConfig(model=ModelConfig(n_layer=2, d_model=32, d_head=8, n_head=4, d_inner=64)), tmp_path / "c.json"
    )
    assert main(["budget", "--config", str(tmp_path / "c.json"), "--set", "model.layers.1.mem_len=100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [layer["mem_len"] for layer in data["layers"]] == [512, 100]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["budget", "--set", "model.layers.3.mem_len=x"], "model.layers.3.mem_len: expected int"),
        (["budget", "--config", "/nonexistent.json"], "config file /nonexistent.json does not exist"),
        (["budget", "--tgt-len", "0"], "--tgt-len and --batch must be >= 1"),
        (["budget", "--attn", "fancy"], "unknown attention variant 'fancy'"),
    ],
)
def test_budget_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "budget" in capsys.readouterr().out


def test_the_budget_a_run_logs_is_per_sequence_like_every_table_with_the_batch_beside_it():
    from txl.model.budget import budget
    from txl.train.log import budget_row
    from txl.train.presets import get_preset

    run = get_preset("tiny")
    row = budget_row(run, 2, "fp32")
    one = budget(run.model, run.train.tgt_len)
    assert row["memory_mib"] == one.bytes / 2**20 and row["cached_positions"] == one.cached_positions
    assert row["memory_mib_batch"] == budget(run.model, run.train.tgt_len, run.train.batch_size * 2).bytes / 2**20


def test_budget_takes_a_run_folder_shows_bytes_and_says_where_evaluation_reaches(tmp_path, capsys):
    from txl.config import save_config
    from txl.train.presets import get_preset

    run = get_preset("tiny")
    run.train.tgt_len, run.eval.tgt_len = 16, 8
    (tmp_path / "run").mkdir()
    save_config(run, tmp_path / "run" / "config.json")
    assert main(["budget", "--config", str(tmp_path / "run"), "--memory", "4"]) == 0
    out = capsys.readouterr().out
    assert "MiB" in out and "  bytes  " in out and " 0.0 MiB" not in out
    assert "cached positions 8 per sequence, 1.0 KiB (1,024 bytes) at float32" in out  # 2 layers x 4 x d 32 x 4
    assert "over the training segment (16); txl eval scores segments of 8 (eval.tgt_len), where it is" in out
    assert main(["budget", "--config", str(tmp_path), "--memory", "4"]) == 2
    assert "a folder without a config.json" in capsys.readouterr().err
