"""The fast attention paths against the plain reference: outputs and gradients, mixed plans,
every variant that has one."""

import math
import warnings

import pytest
import torch
from conftest import tiny_config

from txl.attention import VARIANTS
from txl.attention.fast import block_mask
from txl.model.transformer import TransformerXL

FAST = [name for name, cls in VARIANTS.items() if cls.fast_impls]
PLANS = [
    dict(memory="6,0,9", attn_range="inf,inf,3"),
    dict(memory="lrm=1@interleave:12,srm=3"),
    dict(memory="5", same_length=True),
    dict(memory="5", same_length=True, same_length_rule="pt"),
]


def pair(attn: str, impl: str, **plan):
    torch.manual_seed(0)
    kw = dict(n_layer=3, attn=f"attn={attn}@first:2,xl", n_head=2, d_head=8, **plan)
    plain = TransformerXL(tiny_config(**kw, attn_impl="plain"))
    fast = TransformerXL(tiny_config(**kw, attn_impl=impl))
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def run(model, tokens, tgt_len=4, grad=True):
    """Loss over the whole stream, segment by segment with memory, and the gradients."""
    mems, total = None, 0.0
    for start in range(0, tokens.size(1) - 1, tgt_len):
        x = tokens[:, start : start + tgt_len]
        y = tokens[:, start + 1 : start + 1 + tgt_len]
        x = x[:, : y.size(1)]
        nll, mems = model(x, mems, y)
        total = total + nll.sum()
    if not grad:
        return total, {}
    total.backward()
    return total, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_every_variant_says_which_fast_paths_it_has():
    assert set(FAST) == {"xl", "alibi", "t5"}
    assert all(VARIANTS[n].fast_impls == frozenset() for n in ("las", "las-local", "las-smooth", "sikf"))


@pytest.mark.parametrize("attn", FAST)
@pytest.mark.parametrize("plan", PLANS, ids=["mixed-range", "lrm", "same-length", "same-length-pt"])
def test_sdpa_matches_plain_outputs_and_gradients(attn, plan, float64):
    plain, fast = pair(attn, "sdpa", **plan)
    tokens = torch.randint(0, 23, (2, 21))
    loss_p, grads_p = run(plain, tokens)
    loss_f, grads_f = run(fast, tokens)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-10, atol=1e-10)
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("attn", FAST)
@pytest.mark.parametrize("plan", PLANS, ids=["mixed-range", "lrm", "same-length", "same-length-pt"])
def test_flex_matches_plain_forward_on_cpu(attn, plan, float64):
    plain, fast = pair(attn, "flex", **plan)
    plain.eval(), fast.eval()
    tokens = torch.randint(0, 23, (2, 21))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager FlexAttention warns that it is unfused on a CPU
        loss_p, _ = run(plain, tokens, grad=False)
        loss_f, _ = run(fast, tokens, grad=False)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-10, atol=1e-10)


def test_sdpa_trains_with_attention_dropout():
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=2, attn_impl="sdpa", dropatt=0.3))
    model.train()
    loss, _ = model(torch.randint(0, 23, (2, 8)), None, torch.randint(0, 23, (2, 8)))
    loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_flex_gives_way_to_sdpa_while_attention_dropout_is_on():
    model = TransformerXL(tiny_config(n_layer=1, attn_impl="flex", dropatt=0.1))
    ctx = model.context(4, model.init_mems(), torch.device("cpu"))
    attn = model.layers[0].attn
    assert attn.pick_impl(ctx) == "sdpa"
    model.eval()
    assert attn.pick_impl(ctx) == "flex"


def test_a_shorter_range_skips_blocks():
    full = block_mask(512, 1024, math.inf, "cpu")
    ranged = block_mask(512, 1024, 128.0, "cpu")

    def computed(m):  # partly visible blocks plus wholly visible ones
        return int(m.kv_num_blocks.sum() + m.full_kv_num_blocks.sum())

    assert computed(full) == 26 and computed(ranged) == 8  # of 32: the future is skipped, and beyond the range too


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["sdpa", "flex"])
@pytest.mark.parametrize("attn", FAST)
def test_fast_paths_match_plain_on_gpu(attn, impl):
    """Gradients through FlexAttention exist only on a GPU; bf16 agrees with fp32 plain to bf16 tolerance."""
    plain, fast = pair(attn, impl, memory="lrm=1@interleave:40,srm=8", attn_range="inf,16,inf")
    plain, fast = plain.cuda(), fast.cuda()
    tokens = torch.randint(0, 23, (4, 65), device="cuda")
    loss_p, grads_p = run(plain, tokens, tgt_len=16)
    loss_f, grads_f = run(fast, tokens, tgt_len=16)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-4, atol=1e-3)
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-3, atol=1e-4, msg=name)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss_bf16, _ = run(fast, tokens, tgt_len=16, grad=False)
    torch.testing.assert_close(loss_bf16.float(), loss_p, rtol=2e-2, atol=0)
