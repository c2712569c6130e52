import random
import subprocess
import sys

import numpy as np
import pytest

from txl.cli import main
from txl.config import ModelConfig
from txl.model.plans import ATTENTION, apply_plans, describe
from txl.plan.language import MEMORY, RANGE, PlanError, format_plan, parse_plan, placement_layers
from txl.plan.reach import max_distance, reach_by_position


def test_uniform_and_runs():
    assert parse_plan("24x512", 24) == [512] * 24
    assert parse_plan("512", 6) == [512] * 6
    assert parse_plan("2x2304,4x128", 6) == [2304, 2304, 128, 128, 128, 128]
    assert parse_plan("1,2,3", 3) == [1, 2, 3]
    assert parse_plan("[4, 5]", 2) == [4, 5]


def test_rae_razavi_placements():
    lrm = parse_plan("lrm=4@interleave:2304,srm=128", 24)
    assert [i for i, m in enumerate(lrm) if m == 2304] == [5, 11, 17, 23]
    assert lrm.count(128) == 20
    last = parse_plan("lrm=6@last:2048,srm=256", 24)
    assert [i for i, m in enumerate(last) if m == 2048] == list(range(18, 24))
    first = parse_plan("lrm=2@first:2048,srm=256", 24)
    assert [i for i, m in enumerate(first) if m == 2048] == [0, 1]
    # the generic spelling means the same
    assert parse_plan("2304@interleave:4,128", 24) == lrm
    assert parse_plan("lrm=0@interleave:2304,srm=128", 24) == [128] * 24
    assert parse_plan("lrm=24@interleave:2304,srm=128", 24) == [2304] * 24


@pytest.mark.parametrize("n_layer", [1, 5, 12, 24])
def test_interleave_is_evenly_spread_and_includes_the_top(n_layer):
    for k in range(1, n_layer + 1):
        layers = placement_layers("interleave", k, n_layer)
        assert len(set(layers)) == k and layers == sorted(layers)
        assert layers[-1] == n_layer - 1
        gaps = [b - a for a, b in zip([-1] + layers, layers)]
        assert max(gaps) - min(gaps) <= 1


def test_range_and_attention_plans():
    assert parse_plan("range=128@first:12", 24, RANGE) == [128] * 12 + [None] * 12
    assert parse_plan("inf", 3, RANGE) == [None] * 3
    assert parse_plan("attn=xl@first:2", 4, ATTENTION) == ["xl"] * 4
    assert parse_plan("attn=xl+fastrpb@last:1,xl", 3, ATTENTION) == ["xl", "xl", "xl+fastrpb"]


def test_apply_plans_sets_layers():
    cfg = apply_plans(ModelConfig(n_layer=4), memory="lrm=1@last:64,srm=8", attn_range="range=2@first:1")
    assert cfg.mem_lens == [8, 8, 8, 64] and cfg.attn_ranges == [2, None, None, None]
    assert describe(cfg) == {"memory": "3x8,1x64", "range": "1x2,3xinf", "attn": "4xxl"}


@pytest.mark.parametrize("kind", [MEMORY, RANGE])
def test_round_trip_of_random_plans(kind):
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 30)
        values = [rng.choice([0, 1, 16, 128, 2304] + ([None] if kind is RANGE else [])) for _ in range(n)]
        text = format_plan(values, kind)
        assert parse_plan(text, n, kind) == values


@pytest.mark.parametrize(
    "text",
    ["24x512", "lrm=4@interleave:2304,srm=128", "lrm=6@last:2048,srm=256", "2304@first:3,128", "1,2,3," * 7 + "4,5,6"],
)
def test_round_trip_of_written_plans(text):
    values = parse_plan(text, 24)
    assert parse_plan(format_plan(values), 24) == values


@pytest.mark.parametrize(
    "text, message",
    [
        ("lrm=30@interleave:2304,srm=128", "places 30 layers at 'interleave' but the model has 24 layers"),
        ("-5", "a memory length must be a whole number >= 0, got '-5'"),
        ("24x-5", "got '-5'"),
        ("lrm=4@middle:2304,srm=128", "unknown placement 'middle' (use first, interleave, last)"),
        ("lrm=4@interleave:2304", "leaves 20 layers without a value"),
        ("lrm=4@interleave,srm=128", "must look like lrm=COUNT@PLACEMENT:LENGTH"),
        ("12x512", "describes 12 layers but the model has 24"),
        ("512,,512", "has an empty item"),
        ("", "has an empty item"),
        ("foo=3", "unknown key 'foo'"),
        ("2304@first:4,2304@first:2,128", "places layer 0 twice"),
        ("2x512,128@first:2", "mixes runs"),
        ("128@first:2,64,32", "more than one value"),
        ("0x512,24x512", "a run of no layers"),
        ("lots", "must be a whole number"),
    ],
)
def test_malformed_plans_are_one_line_errors(text, message):
    with pytest.raises(PlanError) as err:
        parse_plan(text, 24)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_attention_variant_lists_the_known():
    with pytest.raises(PlanError, match=r"unknown attention variant 'fancy' \(known: xl"):
        parse_plan("fancy@first:2", 4, ATTENTION)


@pytest.mark.parametrize("plan", ["lrm=30@interleave:2304,srm=128", "-5", "lrm=4@middle:2304,srm=128"])
def test_cli_reports_bad_plans_with_exit_code_2(plan, capsys):
    assert main(["budget", "--layers", "24", "--memory", plan]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("txl budget: error: memory plan")


def test_cli_bad_plan_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "txl", "budget", "--layers", "24", "--memory", "lrm=30@interleave:2304,srm=128"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "30 layers" in proc.stderr


def reach_by_brute_force(mem_lens, attn_ranges, tgt_len, same_length):
    """The steady-state reach by walking every key position of every window (memory-length work)."""
    r = np.zeros(tgt_len)
    for m, rng in zip(mem_lens, attn_ranges):
        limit = max_distance(m, rng, same_length)
        new = np.empty(tgt_len)
        for i in range(tgt_len):
            d = int(min(limit, m + i))
            new[i] = i + max(r[s % tgt_len] - s for s in range(i - d, i + 1))
        r = new
    return r


@pytest.mark.parametrize("seed", range(30))
def test_closed_form_reach_equals_brute_force(seed):
    rng = random.Random(seed)
    n, tgt = rng.randint(1, 4), rng.randint(1, 9)
    mems = [rng.choice([0, 1, 3, tgt, 2 * tgt + 1, 5 * tgt]) for _ in range(n)]
    ranges = [rng.choice([None, 0, 1, 2, tgt, 3 * tgt]) for _ in range(n)]
    same = rng.choice([False, "tf", "pt"])
    fast = reach_by_position(mems, ranges, tgt, same)
    assert fast.tolist() == reach_by_brute_force(mems, ranges, tgt, same).tolist()


def test_a_budget_of_a_billion_positions_costs_memory_of_the_segment_not_the_memory(capsys):
    import tracemalloc

    tracemalloc.start()
    assert (
        main(["budget", "--layers", "24", "--memory", "1000000000", "--memory", "lrm=4@interleave:1000000000,srm=128"])
        == 0
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    out = capsys.readouterr().out
    assert "24,000,000,000" in out  # cached positions, counted exactly
