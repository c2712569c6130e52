"""Attention sinks (StreamingLLM): a layer keeps the stream's first states for good beside its recent memory."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_fast_path_matches_plain, cache_bytes, run_segments, tiny_config

from txl.cli import main
from txl.config import ConfigError, ModelConfig, from_dict, to_dict
from txl.model.budget import budget
from txl.model.plans import MemoryPlan, apply_plans, describe
from txl.model.quantize import MEMORY_DTYPES
from txl.model.transformer import TransformerXL
from txl.plan.reach import dependencies, earliest_dependency


def test_zero_sinks_is_todays_model_bit_for_bit():
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=3, memory="6")).eval()
    tokens = torch.randint(0, 23, (2, 24))
    plain = run_segments(model, tokens, 5)
    with model.memory_plan(MemoryPlan.parse(3, sinks="0")):
        assert torch.equal(run_segments(model, tokens, 5), plain)
    with model.memory_plan(MemoryPlan.parse(3, sinks="2")):
        assert not torch.equal(run_segments(model, tokens, 5), plain)


def test_sinks_hold_the_stream_start_and_the_memory_the_states_after_them():
    """Sinks 3 + memory 4 hold every state while 7 or fewer were seen (so equal a memory of 7), then the first 3 and
    the latest 4: a state is a sink or in memory, never both."""
    torch.manual_seed(0)
    long = TransformerXL(tiny_config(n_layer=2, memory="7")).eval()
    sinks = TransformerXL(apply_plans(tiny_config(n_layer=2, memory="4"), sinks="3")).eval()
    sinks.load_state_dict(long.state_dict())
    tokens = torch.randint(0, 23, (2, 15))
    with torch.no_grad():
        a, b = run_segments(long, tokens, 5), run_segments(sinks, tokens, 5)
        torch.testing.assert_close(b[:, :10], a[:, :10], rtol=0, atol=1e-6)  # 5 seen, then 10 > 7
        assert (b[:, 10:] - a[:, 10:]).abs().max() > 1e-4
        mems = None
        for start in (0, 5):
            _, mems = sinks.hidden(tokens[:, start : start + 5], mems)
        embedded = sinks.embed(tokens)  # layer 0 caches its input, the embeddings
    assert torch.equal(mems[0].sinks.values, embedded[:, :3]) and torch.equal(mems[0].recent.values, embedded[:, 6:10])
    assert not any(t.requires_grad for state in mems for t in state.to_dict().values())


def test_sinks_longer_than_a_segment_fill_over_several_segments():
    torch.manual_seed(0)
    model = TransformerXL(apply_plans(tiny_config(n_layer=1, memory="2"), sinks="7")).eval()
    tokens = torch.randint(0, 23, (1, 12))
    mems, sizes = None, []
    with torch.no_grad():
        for start in range(0, 12, 3):
            _, mems = model.hidden(tokens[:, start : start + 3], mems)
            sizes.append((mems[0].sinks.values.size(1), mems[0].recent.values.size(1)))
        assert torch.equal(mems[0].sinks.values, model.embed(tokens)[:, :7])
    assert sizes == [(3, 0), (6, 0), (7, 2), (7, 2)]


SINK_PLANS = [
    dict(memory="4", sinks="2"),
    dict(memory="0,3,2", sinks="1,0,3"),
    dict(memory="3", sinks="sinks=5@last:1,0"),
    dict(memory="2", attn_range="range=2@first:1,inf", sinks="sinks=2@last:2,0"),
]


@pytest.mark.parametrize("plan", SINK_PLANS, ids=str)
def test_the_tokens_a_position_depends_on_are_exactly_the_arithmetics(plan, float64):
    """Brute force: change each earlier token; the output moves exactly for those `dependencies` names."""
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=3, **plan)
    model = TransformerXL(cfg).eval()
    tokens = torch.randint(0, 23, (1, 30))
    sinks = [layer.sinks for layer in cfg.layers]
    with torch.no_grad():
        base = run_segments(model, tokens, 4)
        for t in (9, 21, 29):
            expected = dependencies(cfg.mem_lens, cfg.attn_ranges, 4, t, sinks=sinks)
            moved = []
            for p in range(t + 1):
                changed = tokens.clone()
                changed[0, p] = (changed[0, p] + 1) % 23
                if (run_segments(model, changed, 4)[0, t] - base[0, t]).abs().max() > 0:
                    moved.append(p)
            assert moved == expected, f"position {t}"
            assert earliest_dependency(cfg.mem_lens, cfg.attn_ranges, 4, t, sinks=sinks) == expected[0]
    assert any(b - a > 1 for a, b in zip(expected, expected[1:]))  # the sinks make a gap: not one window


def test_dependencies_without_sinks_are_one_window_ending_at_the_position():
    cfg = tiny_config(n_layer=3, memory="4,0,6", attn_range="range=3@first:1,inf")
    for t in (5, 17, 40):
        deps = dependencies(cfg.mem_lens, cfg.attn_ranges, 4, t)
        assert deps == list(range(earliest_dependency(cfg.mem_lens, cfg.attn_ranges, 4, t), t + 1))


@pytest.mark.parametrize("impl", ["sdpa", "flex"])
def test_every_attention_path_reads_the_sinks_as_plain_does(impl):
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=2, memory="6", sinks="3", attn="attn=alibi@first:1,xl", memory_dtype="int8")
    assert_fast_path_matches_plain(cfg, impl)


def test_a_models_cache_holds_what_its_budget_counts_for_sinks_in_every_dtype():
    torch.manual_seed(0)
    for dtype in MEMORY_DTYPES:
        cfg = apply_plans(tiny_config(n_layer=2, memory="5"), sinks="sinks=3@last:1,2", memory_dtype=dtype)
        model = TransformerXL(cfg).eval()
        mems = None
        with torch.no_grad():
            for _ in range(3):  # 12 positions seen: sinks and memory full
                _, mems = model(torch.randint(0, 23, (3, 4)), mems)
        held = cache_bytes(mems)
        b = budget(cfg, 4, batch=3)
        assert held == b.bytes and b.cached_positions == 5 + 2 + 5 + 3, dtype
        assert [layer.sinks for layer in b.layers] == [2, 3] and mems[1].sinks.values.shape[1] == 3


def test_a_plan_with_sinks_learns_an_answer_at_the_stream_start_and_without_them_stays_at_chance():
    """The stream's first token is one of 4 symbols; 31 tokens later a question asks for it. A memory of 8 cannot
    reach back so far; one sink holds it."""

    def batch(gen, n, length=32):
        seq = torch.randint(4, 12, (n, length + 1), generator=gen)
        seq[:, 0] = seq[:, length] = torch.randint(0, 4, (n,), generator=gen)
        seq[:, length - 1] = 12  # the question
        return seq[:, :-1], seq[:, 1:]

    def last_logp(model, x):
        mems = None
        for start in range(0, 32, 8):
            out, mems = model(x[:, start : start + 8], mems)
        return out[:, -1]

    def accuracy(sinks: str) -> float:
        torch.manual_seed(1)
        fields = dict(vocab_size=13, n_layer=1, d_model=32, n_head=2, d_head=16, d_inner=64, dropout=0.0, dropatt=0.0)
        model = TransformerXL(apply_plans(ModelConfig(**fields), memory="8", sinks=sinks))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(1)
        for _ in range(80):
            x, y = batch(gen, 64)
            logp = last_logp(model, x)
            loss = -logp.gather(1, y[:, -1:]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        x, y = batch(torch.Generator().manual_seed(99), 512)
        with torch.no_grad():
            return (last_logp(model.eval(), x).argmax(-1) == y[:, -1]).float().mean().item()

    assert accuracy("1") > 0.95
    assert accuracy("0") < 0.35  # chance is 0.25


def test_the_plan_language_and_configs_carry_sinks_and_refuse_what_cannot_run():
    cfg = apply_plans(tiny_config(n_layer=4), sinks="sinks=4@last:1,0")
    assert [layer.sinks for layer in cfg.layers] == [0, 0, 0, 4] and describe(cfg)["sinks"] == "3x0,1x4"
    assert to_dict(cfg)["layers"][3]["sinks"] == 4 and from_dict(ModelConfig, to_dict(cfg)) == cfg
    assert "sinks" not in to_dict(tiny_config())["layers"][0] and "sinks" not in describe(tiny_config())
    with pytest.raises(ConfigError, match="cannot also limit its attention \\(range 2\\)"):
        TransformerXL(apply_plans(tiny_config(n_layer=2), sinks="1", attn_range="2"))
    with pytest.raises(ConfigError, match="same_length"):
        TransformerXL(tiny_config(n_layer=2, sinks="1", same_length=True))
    with pytest.raises(ConfigError, match="'sikf' carries its whole past"):
        TransformerXL(tiny_config(n_layer=2, sinks="1", attn="sikf"))
    with pytest.raises(ConfigError, match="a number of sinks"):
        apply_plans(tiny_config(n_layer=2), sinks="-1")


def test_txl_budget_prints_sinks_and_their_bytes(capsys):
    argv = ["budget", "--layers", "4", "--d-model", "64", "--memory", "4x32", "--tgt-len", "16"]
    assert main([*argv, "--sinks", "sinks=4@last:2,0"]) == 0
    out = capsys.readouterr().out
    assert "sinks" in out and "sinks 2x0,2x4" in out and "the stream's first 4 through sinks" in out
    assert f"{(4 * 32 + 2 * 4) * 64 * 4 / 2**20:.3f}" in out  # the total MiB: memory and sinks, float32
    assert main([*argv, "--sinks", "4", "--range", "8"]) == 2
    assert "cannot also limit its attention (range 8)" in capsys.readouterr().err


def test_an_evaluation_spec_carries_sinks_and_names_its_plans_by_them():
    from txl.config import RunConfig
    from txl.evaluation.evaluate import EvalSpec

    run = RunConfig(model=tiny_config(n_layer=3, memory="8"))
    spec = EvalSpec.for_run(run, memory="4", sinks="sinks=2@last:1,0", memory_dtype="int8")
    (plan,) = spec.plans()
    assert plan.name == "4, stored as int8, sinks sinks=2@last:1,0"
    cfg = plan.apply(run.model)
    assert [layer.sinks for layer in cfg.layers] == [0, 0, 2] and cfg.mem_lens == [4, 4, 4]
    assert EvalSpec.for_run(run).plans()[0].name == "as trained"


@pytest.mark.parametrize("refresh", [0, 3])
def test_the_sinks_training_attends_to_are_taken_anew_as_the_weights_change(tmp_path, monkeypatch, capsys, refresh):
    """With train.sink_refresh the sinks are a recent segment's first states (what the current weights make);
    without, they are the stream's first states from the first step on, made by the initial weights."""
    from conftest import tiny_run

    from txl.train.loop import Trainer

    seen = []
    real = Trainer._commit

    def commit(self, segment, mems, loss):
        seen.append(mems[0][1].sinks.values.clone())  # layer 1's sinks
        return real(self, segment, mems, loss)

    monkeypatch.setattr(Trainer, "_commit", commit)
    run = tiny_run(tmp_path, **{"train.steps": 8, "train.sink_refresh": refresh, "model.layers.1.sinks": 2})
    Trainer(run, tmp_path / "run", progress=False).fit()
    assert ("train.sink_refresh=N takes them anew" in capsys.readouterr().err) == (refresh == 0)  # said when stale
    changed = [not torch.equal(a, b) for a, b in zip(seen, seen[1:])]
    if refresh:  # taken anew at steps 3 and 6 (0-based: before the 4th and 7th), and kept in between
        assert changed == [False, False, True, False, False, True, False]
    else:
        assert not any(changed)


def test_sinks_taken_anew_are_what_the_current_weights_make_of_the_segment_not_the_first_weights(tmp_path, monkeypatch):
    """New text alone would change the sinks too. At a refresh step the sinks the model attends to are the states
    its weights of that step make of the segment (recomputed beside the step), and not what the initial weights
    make of the same segment and memory."""
    import copy

    from conftest import tiny_run

    from txl.train.loop import Trainer
    from txl.train.optim import TrainStep

    first, made, kept = [], [], []
    real = TrainStep.__call__

    def call(self, segment, mems, step):
        rows = segment.inputs.size(0) // self.chunks
        if not first:  # the weights as they began, before the first update
            first.append(copy.deepcopy(self.model))
        with torch.no_grad():  # the same segment and memory through the weights as they are, and as they began
            now = self.model(segment.inputs[:rows], mems[0], segment.targets[:rows])[1][1].sinks.values
            then = first[0](segment.inputs[:rows], mems[0], segment.targets[:rows])[1][1].sinks.values
        made.append((now.clone(), then.clone()))
        out = real(self, segment, mems, step)
        kept.append(out[2][0][1].sinks.values.clone())  # layer 1's sinks after the step, carried to the next
        return out

    monkeypatch.setattr(TrainStep, "__call__", call)
    sets = {"train.steps": 8, "train.sink_refresh": 3, "model.layers.1.sinks": 2, "model.dropout": 0.0}
    Trainer(tiny_run(tmp_path, **sets), tmp_path / "run", progress=False).fit()
    assert all(torch.allclose(k, now, atol=1e-6) for k, (now, _) in zip(kept, made))
    for step in (3, 6):  # taken anew after the weights had 3 and 6 updates
        now, then = made[step]
        assert not torch.allclose(now, then, atol=1e-3), step  # the first weights would make other sinks
        assert not torch.equal(kept[step], kept[step - 1])
