"""txl.model.plans: the memory-plan object, written into configs in one place, and read back from them."""

from __future__ import annotations

import pytest
from conftest import tiny_config

from txl.config import ConfigError, to_dict
from txl.model.plans import DIMENSIONS, KEEP, MemoryPlan, apply_plans, describe, planned_model_config


def test_a_plan_parsed_from_the_language_says_what_each_layer_gets():
    plan = MemoryPlan.parse(
        4, "p", memory="lrm=1@last:64,srm=8", attn_range="range=4@first:2", attn="attn=las@first:1,xl"
    )
    assert plan.mem_lens == [8, 8, 8, 64] and plan.attn_ranges == [4, 4, None, None]
    assert plan.layers["attn"] == ("las", "xl", "xl", "xl") and plan.same_length is None and plan.clamp_len == KEEP


def test_applying_a_plan_makes_a_new_config_and_leaves_the_old_one_alone():
    cfg = tiny_config(n_layer=3, memory="8")
    before = to_dict(cfg)
    out = MemoryPlan.parse(3, memory="0,4,16", attn="xl+fastrpb", same_length=True, clamp_len=None).apply(cfg)
    assert to_dict(cfg) == before and out is not cfg and all(a is not b for a, b in zip(out.layers, cfg.layers))
    assert out.mem_lens == [0, 4, 16] and out.same_length is True and out.clamp_len is None
    assert all(layer.attn == "xl" and layer.fastrpb for layer in out.layers)
    assert out.attn_ranges == cfg.attn_ranges  # a dimension the plan does not name is kept


def test_apply_plans_is_the_plan_object_applied():
    cfg = tiny_config(n_layer=4, memory="8")
    a = apply_plans(cfg, memory="2x4,2x16", attn_range="range=3@first:1")
    b = MemoryPlan.parse(4, memory="2x4,2x16", attn_range="range=3@first:1").apply(cfg)
    assert to_dict(a) == to_dict(b)


@pytest.mark.parametrize("memory, attn_range, attn", [("4,8,16", "inf,2,inf", "alibi,xl,t5"), ("3x0", "1", "las")])
def test_a_config_read_back_as_a_plan_applies_to_the_same_config(memory, attn_range, attn):
    cfg = apply_plans(tiny_config(n_layer=3), memory=memory, attn_range=attn_range, attn=attn)
    plan = MemoryPlan.of_config(cfg, "read")
    assert set(plan.layers) == set(DIMENSIONS)
    assert to_dict(plan.apply(tiny_config(n_layer=3, memory="64"))) == to_dict(cfg)
    assert MemoryPlan.parse(
        3, **{"memory": describe(cfg)["memory"], "attn_range": describe(cfg)["range"]}
    ).mem_lens == (cfg.mem_lens)


def test_with_values_replaces_one_dimension():
    plan = MemoryPlan.of_lists("base", attn_ranges=[None, 5], same_length=True)
    moved = plan.with_values("memory", [1, 2], name="moved")
    assert moved.name == "moved" and moved.mem_lens == [1, 2] and moved.attn_ranges == [None, 5] and moved.same_length
    assert plan.mem_lens is None  # the plan itself is unchanged
    assert moved.settings() == {"attn_ranges": [None, 5], "same_length": True, "clamp_len": KEEP}


def test_a_plan_of_the_wrong_length_or_a_negative_value_is_refused():
    cfg = tiny_config(n_layer=2)
    with pytest.raises(ConfigError, match="range plan has 3 values but the model has 2 layers"):
        MemoryPlan.of_lists(attn_ranges=[1, 2, 3]).apply(cfg)
    with pytest.raises(ConfigError, match="model.layers.1: memory length, range and sinks must be >= 0"):
        planned_model_config(cfg, MemoryPlan.of_lists(mem_lens=[1, -1]))
