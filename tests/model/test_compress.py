"""Compressed memory (Rae et al. 2019): states evicted from a layer's memory pooled into slots it also attends to."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_fast_path_matches_plain, cache_bytes, run_segments, tiny_config

from txl.cli import main
from txl.config import ConfigError, ModelConfig, from_dict, to_dict
from txl.model.budget import budget, param_count, reach_lens
from txl.model.cache import pool_groups
from txl.model.plans import MemoryPlan, apply_plans, describe
from txl.model.quantize import MEMORY_DTYPES
from txl.model.transformer import TransformerXL
from txl.plan.language import Compression
from txl.plan.reach import compressed_groups, dependencies, earliest_dependency, reach_by_position


@pytest.mark.parametrize("fn", ["mean", "max", "conv"])
def test_rate_one_with_the_identity_equals_a_raw_memory_of_the_same_length(fn, float64):
    """At rate 1 mean and max pool one state (the identity), and conv starts as mean pooling, so 5 raw + 3 compressed
    slots hold what a raw memory of 8 holds."""
    torch.manual_seed(0)
    raw = TransformerXL(tiny_config(n_layer=2, memory="8")).eval()
    compressed = TransformerXL(tiny_config(n_layer=2, memory="5", compress=f"3/1:{fn}")).eval()
    compressed.load_state_dict(raw.state_dict(), strict=fn != "conv")
    tokens = torch.randint(0, 23, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(run_segments(compressed, tokens, 4), run_segments(raw, tokens, 4), rtol=0, atol=1e-6)


def test_mean_and_max_pooling_equal_a_hand_computation():
    x = torch.arange(2 * 7 * 3, dtype=torch.float64).reshape(2, 7, 3) ** 1.5 % 11
    mean = pool_groups(x, 3, "mean")
    hand = torch.stack([x[:, 0:3].mean(1), x[:, 3:6].mean(1), x[:, 6:7].mean(1)], dim=1)  # a last group of one
    assert torch.equal(mean, hand)
    assert torch.equal(pool_groups(x, 3, "max")[:, 1], torch.maximum(torch.maximum(x[:, 3], x[:, 4]), x[:, 5]))


def test_a_layers_compressed_slots_are_the_mean_of_the_states_evicted_from_its_memory():
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=1, memory="4", compress="2/3:mean")).eval()
    tokens = torch.randint(0, 23, (2, 20))
    mems = None
    with torch.no_grad():
        for start in range(0, 20, 5):
            _, mems = model.hidden(tokens[:, start : start + 5], mems)
        embedded = model.embed(tokens)  # layer 0 caches its input
    groups = compressed_groups(0, 4, 2, 3, 5, 4)
    assert groups == [(11, 14), (14, 16)]  # evictions of 1, 5, 5, 5 states, each 5 pooled as 3 + 2; 2 slots kept
    hand = torch.stack([embedded[:, a:b].mean(1) for a, b in groups], dim=1)
    torch.testing.assert_close(mems[0].slots.values, hand, rtol=0, atol=1e-6)
    assert torch.equal(mems[0].recent.values, embedded[:, 16:20])


def test_the_reconstruction_loss_is_its_formula_and_reaches_the_compressor_alone():
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=2, memory="4", compress="compress=2/2:conv@last:1,0")).train()
    tokens = torch.randint(0, 23, (2, 12))
    _, mems = model(tokens[:, :4], None, tokens[:, :4])
    old = mems[1].recent.values  # layer 1's memory of 4, all evicted by the next segment of 4
    block = model.layers[1]
    inputs = {}
    block.register_forward_pre_hook(lambda mod, args: inputs.update(h=args[0]))
    _, mems = model(tokens[:, 4:8], mems, tokens[:, 4:8])
    recon, h = model.recon_loss, inputs["h"]

    def attend(keys):
        a = block.attn
        q, k, v = (a._heads(F.linear(t, w)) for t, w in zip((h, keys, keys), a.qkv.weight.chunk(3)))
        return ((q @ k.transpose(-1, -2)) * a.scale).softmax(-1) @ v

    slots = block.compressor(old.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(recon, F.mse_loss(attend(slots), attend(old).detach()), rtol=1e-5, atol=1e-7)
    assert recon > 0
    recon.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "compressor" in n)
    assert all(g is None for n, g in grads.items() if "compressor" not in n)  # nothing reaches the main network
    assert not any(t.requires_grad for state in mems for t in state.to_dict().values())


PLANS = [
    dict(memory="4", compress="2/4:mean"),  # whole groups
    dict(memory="3", compress="compress=3/2:mean@first:2,0"),  # groups split at segment ends
    dict(memory="2", compress="2/3:max", sinks="sinks=2@last:1,0"),
]


@pytest.mark.parametrize("plan", PLANS, ids=str)
def test_the_tokens_a_position_depends_on_are_exactly_the_arithmetics(plan, float64):
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=3, **plan)
    model = TransformerXL(cfg).eval()
    tokens = torch.randint(0, 23, (1, 34))
    args = dict(sinks=[layer.sinks for layer in cfg.layers], compress=[(c.cmem_len, c.cmem_rate) for c in cfg.layers])
    with torch.no_grad():
        base = run_segments(model, tokens, 4)
        for t in (13, 25, 33):
            expected = dependencies(cfg.mem_lens, cfg.attn_ranges, 4, t, **args)
            moved = []
            for p in range(t + 1):
                changed = tokens.clone()
                changed[0, p] = (changed[0, p] + 1) % 23
                if (run_segments(model, changed, 4)[0, t] - base[0, t]).abs().max() > 0:
                    moved.append(p)
            assert moved == expected, f"position {t}"


def test_receptive_fields_count_slots_at_their_span_when_groups_are_whole():
    cfg = tiny_config(n_layer=3, memory="4,8,0", compress="compress=3/4:mean@first:2,0")
    compress = [(layer.cmem_len, layer.cmem_rate) for layer in cfg.layers]
    assert reach_lens(cfg) == [16, 20, 0]
    reach = reach_by_position(reach_lens(cfg), cfg.attn_ranges, 4)
    for t in range(120, 128):  # far from the stream start: memories and slots full
        exact = dependencies(cfg.mem_lens, cfg.attn_ranges, 4, t, compress=compress)
        assert exact == list(range(exact[0], t + 1))  # whole groups just before the memory: one window
        assert t - exact[0] == reach[t % 4] == t - earliest_dependency(reach_lens(cfg), cfg.attn_ranges, 4, t)
    assert budget(cfg, 4).receptive_field[0] == 16 + 20


@pytest.mark.parametrize("impl", ["sdpa", "flex"])
def test_every_attention_path_reads_the_slots_as_plain_does(impl):
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=2, memory="4", compress="3/2:max", attn="attn=t5@first:1,xl")
    assert_fast_path_matches_plain(cfg, impl)


def test_a_models_cache_and_parameters_are_what_its_budget_counts():
    torch.manual_seed(0)
    for dtype in MEMORY_DTYPES:
        cfg = tiny_config(n_layer=2, memory="4", compress="compress=3/2:conv@last:1,2/4:max", memory_dtype=dtype)
        model = TransformerXL(cfg).eval()
        mems = None
        with torch.no_grad():
            for _ in range(6):  # 24 positions seen: every slot filled
                _, mems = model(torch.randint(0, 23, (3, 4)), mems)
        held = cache_bytes(mems)
        b = budget(cfg, 4, batch=3)
        assert held == b.bytes and b.cached_positions == 4 + 2 + 4 + 3, dtype
        assert param_count(cfg) == model.num_params()


def test_the_plan_language_and_configs_carry_compression_and_refuse_what_cannot_run():
    cfg = apply_plans(tiny_config(n_layer=4), compress="compress=16/4:conv@last:2,0")
    assert [(x.cmem_len, x.cmem_rate, x.cmem_fn) for x in cfg.layers][1:3] == [(0, 4, "mean"), (16, 4, "conv")]
    assert describe(cfg)["compress"] == "2x0,2x16/4:conv" and "compress" not in describe(tiny_config())
    assert to_dict(cfg)["layers"][3]["cmem_len"] == 16 and from_dict(ModelConfig, to_dict(cfg)) == cfg
    assert "cmem_len" not in to_dict(tiny_config())["layers"][0]
    assert MemoryPlan.parse(2, compress="8/2").layers["compress"] == (Compression(8, 2, "mean"),) * 2
    with pytest.raises(ConfigError, match="LENGTH/RATE"):
        apply_plans(tiny_config(), compress="8x2")
    with pytest.raises(ConfigError, match="unknown compression function 'median'"):
        apply_plans(tiny_config(), compress="8/2:median")
    with pytest.raises(ConfigError, match="cannot also limit its attention \\(range 3\\)"):
        TransformerXL(tiny_config(compress="2/2", attn_range="3"))
    with pytest.raises(ConfigError, match="keeps no memory to compress"):
        TransformerXL(tiny_config(compress="2/2", attn="sikf"))
    model = TransformerXL(tiny_config(compress="2/2:mean"))
    with pytest.raises(ConfigError, match="conv compression is learned"):
        with model.memory_plan(MemoryPlan.parse(2, compress="2/2:conv")):
            pass
    with model.memory_plan(MemoryPlan.parse(2, compress="4/2:max")):  # mean and max need no weights
        assert model.cfg.layers[0].cmem_fn == "max"


def test_training_with_a_learned_compressor_moves_it_by_the_reconstruction_loss(tmp_path):
    from conftest import tiny_run

    from txl.train.loop import Trainer
    from txl.train.runs import load_trained

    run = tiny_run(tmp_path, **{"train.steps": 4})
    run.model = apply_plans(run.model, memory="4", compress="2/2:conv")
    Trainer(run, tmp_path / "run", progress=False).fit()
    block = load_trained(tmp_path / "run", "cpu").model.layers[0]
    mean_pooling = torch.eye(block.compressor.in_channels)[:, :, None].expand_as(block.compressor.weight) / 2
    assert (block.compressor.weight - mean_pooling).abs().max() > 0  # learned from where it started


def test_txl_budget_prints_compressed_memory(capsys):
    argv = ["budget", "--layers", "4", "--d-model", "64", "--memory", "4x32", "--tgt-len", "16"]
    assert main([*argv, "--compress", "compress=16/4:mean@last:2,0"]) == 0
    out = capsys.readouterr().out
    assert "compressed" in out and "16/4:mean" in out and "compressed 2x0,2x16/4:mean" in out
    assert f"{(4 * 32 + 2 * 16) * 64 * 4 / 2**20:.3f}" in out
    assert "receptive field  256.." in out  # 4 x 32 raw + 2 x 16 slots x 4 tokens each


def test_export_refuses_sinks_and_compressed_memory_in_one_line():
    from txl.interop.convert import InteropError, export_state

    for plans, what in ((dict(sinks="sinks=2@last:1,0"), "keep attention sinks"), (dict(compress="2/2"), "compressed")):
        with pytest.raises(InteropError, match=what):
            export_state(TransformerXL(tiny_config(n_layer=2, memory="4", **plans)), "original")
