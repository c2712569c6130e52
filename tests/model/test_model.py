"""The Transformer-XL identities of DESIGN.md, and the pieces checked against direct formulas."""

import math

import pytest
import torch
from conftest import run_segments, tiny_config

from txl.attention.base import rel_shift
from txl.attention.masks import MaskCache
from txl.config import ModelConfig
from txl.model.budget import budget, param_count
from txl.model.plans import apply_plans
from txl.model.transformer import TransformerXL, sinusoid
from txl.plan.reach import SAME_LENGTH_SHORTFALL, earliest_dependency, reach_by_position

PLANS = [
    dict(memory="8"),
    dict(memory="0"),
    dict(memory="3,0,9"),
    dict(memory="5,2,4", attn_range="2,inf,3"),
    dict(memory="lrm=1@interleave:9,srm=2"),
    dict(memory="6", same_length=True),
    dict(memory="7,1,3", attn_range="inf,0,2", same_length=True),
    dict(memory="6", same_length=True, same_length_rule="pt"),
    dict(memory="7,1,3", attn_range="inf,0,2", same_length=True, same_length_rule="pt"),
]


def build(seed=0, **kw):
    torch.manual_seed(seed)
    return TransformerXL(tiny_config(**kw)).eval()


@pytest.mark.parametrize("n_layer", [1, 2, 4])
@pytest.mark.parametrize("pre_lnorm", [False, True])
def test_segments_with_full_memory_equal_one_piece(n_layer, pre_lnorm):
    model = build(n_layer=n_layer, memory="64", pre_lnorm=pre_lnorm)
    tokens = torch.randint(0, 23, (3, 40))
    whole, _ = model(tokens)
    pieces = run_segments(model, tokens, tgt_len=8, hidden=False)
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)
    # and the memory matters: without it the segments differ
    no_mem = build(n_layer=n_layer, memory="0", pre_lnorm=pre_lnorm)
    no_mem.load_state_dict(model.state_dict())
    assert (run_segments(no_mem, tokens, 8, hidden=False) - whole).abs().max() > 1e-4


def test_segments_equal_one_piece_with_adaptive_softmax_and_untied_biases():
    model = build(n_layer=2, memory="64", cutoffs=[5, 12], div_val=2, d_embed=16, untie_r=True, clamp_len=30)
    tokens = torch.randint(0, 23, (2, 33))
    whole, _ = model(tokens)
    torch.testing.assert_close(run_segments(model, tokens, 11, hidden=False), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("plan", PLANS, ids=str)
def test_causality_across_segments(plan, float64):
    model = build(n_layer=3, **plan)
    tokens = torch.randint(0, 23, (2, 30))
    base = run_segments(model, tokens, 4)
    for t in (0, 5, 13, 22, 28):
        changed = tokens.clone()
        changed[:, t + 1 :] = torch.randint(0, 23, changed[:, t + 1 :].shape)
        out = run_segments(model, changed, 4)
        assert torch.equal(out[:, : t + 1], base[:, : t + 1]), f"output at <= {t} changed"


@pytest.mark.parametrize("plan", PLANS, ids=str)
def test_receptive_field_is_exact(plan, float64):
    """A token before the earliest dependency never matters; the earliest one does."""
    model = build(n_layer=3, **plan)
    cfg = model.cfg
    tokens = torch.randint(0, 23, (1, 36))
    base = run_segments(model, tokens, 4)
    for t in (23, 30, 35):
        first = earliest_dependency(cfg.mem_lens, cfg.attn_ranges, 4, t, cfg.same_length_mode)
        for p, should_change in ((first - 1, False), (first, True)):
            if p < 0:
                continue
            changed = tokens.clone()
            changed[0, p] = (changed[0, p] + 1) % 23
            moved = (run_segments(model, changed, 4)[0, t] - base[0, t]).abs().max().item()
            assert (moved > 0) == should_change, f"position {t}: token {p} moved the output by {moved}"


@pytest.mark.parametrize("plan", PLANS, ids=str)
def test_steady_state_reach_agrees_with_exact_dependency(plan):
    cfg = tiny_config(n_layer=3, **plan)
    tgt = 4
    reach = reach_by_position(cfg.mem_lens, cfg.attn_ranges, tgt, cfg.same_length_mode)
    for t in range(200, 208):  # far from the stream start, memories are full
        exact = t - earliest_dependency(cfg.mem_lens, cfg.attn_ranges, tgt, t, cfg.same_length_mode)
        assert exact == reach[t % tgt]
    short = SAME_LENGTH_SHORTFALL[cfg.same_length_rule] if cfg.same_length else 0  # pt windows stop one short
    lower = sum(min(max(m - short, 0), math.inf if r is None else r) for m, r in zip(cfg.mem_lens, cfg.attn_ranges))
    assert reach.min() >= lower
    if cfg.same_length:
        assert reach.min() == reach.max() == lower


@pytest.mark.parametrize("plan", PLANS, ids=str)
def test_cache_sizes_match_the_budget(plan):
    model = build(n_layer=3, **plan)
    mems = None
    for _ in range(5):
        _, mems = model(torch.randint(0, 23, (2, 4)), mems)
    b = budget(model.cfg, tgt_len=4, batch=2)
    for state, layer in zip((c.to_dict() for c in mems), b.layers):
        assert (state["h"].size(1) if "h" in state else 0) == layer.cached_positions
        if "h" in state:
            assert state["h"].numel() * 4 == layer.bytes
            assert not state["h"].requires_grad


def test_memory_is_stop_gradient():
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=2, memory="8"))
    _, mems = model(torch.randint(0, 23, (2, 8)))
    loss, _ = model(torch.randint(0, 23, (2, 8)), mems, targets=torch.randint(0, 23, (2, 8)))
    loss.mean().backward()
    assert all(not s.recent.values.requires_grad and s.recent.values.grad_fn is None for s in mems)


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(),
        ModelConfig(pre_lnorm=True, tie_weight=False),
        ModelConfig(vocab_size=1000, cutoffs=[100, 500], div_val=4, d_embed=256, untie_r=True),
        ModelConfig(vocab_size=1000, cutoffs=[100, 500], div_val=1, d_embed=256),
        ModelConfig(vocab_size=1000, cutoffs=[100], div_val=2, tie_projs=[True, False], tie_weight=False),
        apply_plans(ModelConfig(n_layer=3, d_model=64, d_head=8, d_inner=128), memory="lrm=1@last:64,srm=8"),
    ],
    ids=["enwik8-base", "pre-ln-untied", "adaptive-div4", "adaptive-div1-proj", "adaptive-partly-tied", "mixed-plan"],
)
def test_parameter_count_formula_matches_the_model(cfg):
    assert param_count(cfg) == TransformerXL(cfg).num_params()


def test_enwik8_base_has_41m_parameters():
    assert param_count(ModelConfig()) == 41_082_112


def test_longer_memory_at_evaluation_and_restore():
    model = build(n_layer=2, memory="4")
    tokens = torch.randint(0, 23, (1, 24))
    short = run_segments(model, tokens, 4)
    with model.memory_plan(mem_lens=[24, 24]):
        long = run_segments(model, tokens, 4)
        whole = model.hidden(tokens)[0]
    assert model.cfg.mem_lens == [4, 4]
    torch.testing.assert_close(long, whole, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(short, long)


def test_rel_shift_matches_a_gather():
    q, k = 5, 9
    x = torch.randn(2, 3, q, k)
    mlen = k - q
    out = rel_shift(x)
    for i in range(q):
        for j in range(mlen + i + 1):
            # column c of x holds distance k-1-c; the result holds distance mlen+i-j
            assert out[..., i, j].equal(x[..., i, k - 1 - (mlen + i - j)])


def test_relative_attention_matches_the_formula(float64):
    """score(i,j) = (q_i+u).k_j + (q_i+v).W_r R(min(d, clamp)), d = mlen+i-j, over memory and segment."""
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=1, memory="6", clamp_len=4)
    model = TransformerXL(cfg).eval()
    attn = model.layers[0].attn
    _, mems = model(torch.randint(0, 23, (1, 6)))
    x = torch.randn(1, 5, 16)
    mem = mems[0].recent.values
    ctx = model.context(5, mems, torch.device("cpu"))
    cat = torch.cat([mem, x], 1)
    w_q, w_k, _ = attn.qkv.weight.chunk(3)
    q = attn._heads(x @ w_q.t())
    k = attn._heads(cat @ w_k.t())
    got = attn.scores(q, k, ctx)
    u, v = model.r_w_bias, model.r_r_bias
    for i in range(5):
        for j in range(6 + i + 1):
            d = min(6 + i - j, 4)
            r = attn.r_proj(sinusoid(torch.tensor([d]), 16))[0].view(2, 8)
            want = ((q[0, :, i] + u) * k[0, :, j]).sum(-1) + ((q[0, :, i] + v) * r).sum(-1)
            torch.testing.assert_close(got[0, :, i, j], want * attn.scale)


def test_same_length_sees_mem_len_plus_one_keys():
    """With same_length every query sees distances 0..mem_len (the TF original; the PyTorch one saw one fewer)."""
    masks = MaskCache(torch.device("cpu"))
    model = build(n_layer=1, memory="5", same_length=True)
    limit = model.layers[0].attn.max_distance(True)
    visible = masks.visible(4, 9, limit)
    assert visible.sum(-1).tolist() == [6, 6, 6, 6]


def test_adaptive_softmax_is_a_distribution_and_nll_agrees():
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=1, cutoffs=[5, 12], div_val=2)).eval()
    tokens = torch.randint(0, 23, (2, 7))
    logp, _ = model(tokens)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 7))
    nll, _ = model(tokens, targets=tokens)
    torch.testing.assert_close(nll, -logp.gather(-1, tokens[..., None]).squeeze(-1))


def test_bad_memory_shape_is_rejected():
    model = build(n_layer=2)
    with pytest.raises(ValueError, match="memory has 1 layers, the model 2"):
        model(torch.zeros(1, 4, dtype=torch.long), [{}])


def test_a_forward_pass_traces_into_one_graph_for_torch_compile():
    """train.compile compiles the model: a break in its graph (a Python builtin dynamo cannot trace, say) would split
    it and keep the pieces from fusing. One segment with memory, the default model."""
    model = TransformerXL(tiny_config(memory="6"))
    tokens = torch.randint(0, 23, (2, 5))
    _, mems = model(tokens, model.init_mems(), tokens)
    explained = torch._dynamo.explain(lambda x, m: model(x, m, x)[0].sum())(tokens, mems)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
