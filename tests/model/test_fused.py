"""The fused Triton kernel against the plain path: outputs and every gradient, over shapes and plans.

Without a GPU the kernel runs in Triton's interpreter (conftest sets TRITON_INTERPRET=1),
on tiny sizes; on a GPU the same tests run compiled, and bf16 is checked against float32.
"""

import math

import pytest
import torch
from conftest import tiny_config

from txl.model.transformer import TransformerXL

triton = pytest.importorskip("triton")
from txl.attention.fused import available  # noqa: E402
from txl.attention.fused_op import fused_attention  # noqa: E402
from txl.attention.launches import Launch, launch_for  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not available(torch.device(DEVICE)), reason="triton cannot run here")


def reference(qu, qv, k, v, rd, limit, scale):
    """The formula, written out: score(i, j) = (qu_i . k_j + qv_i . rd[mlen + i - j]) * scale, over visible keys."""
    B, H, Q, D = qu.shape
    K = k.size(2)
    d = (K - Q) + torch.arange(Q, device=qu.device)[:, None] - torch.arange(K, device=qu.device)[None, :]
    by_distance = qv @ rd.transpose(-1, -2)  # (B, H, Q, K): column c is distance c
    position = torch.gather(by_distance, 3, d.clamp(0, K - 1).expand(B, H, Q, K))
    scores = (qu @ k.transpose(-1, -2) + position) * scale
    visible = (d >= 0) & (d <= limit)
    return scores.masked_fill(~visible, -math.inf).softmax(-1) @ v


SHAPES = [  # (batch, heads, queries, memory, head dim, range limit)
    pytest.param(2, 2, 20, 13, 8, math.inf, id="memory-shorter-than-segment"),
    pytest.param(1, 1, 16, 0, 16, math.inf, id="no-memory"),
    pytest.param(1, 2, 17, 40, 8, 9.0, id="range-shorter-than-memory"),
    pytest.param(2, 1, 33, 5, 20, math.inf, id="not-block-multiples"),
    pytest.param(1, 3, 7, 50, 8, math.inf, id="memory-longer-than-segment"),
    pytest.param(2, 2, 12, 12, 8, 12.0, id="same-length-tf-limit"),
    pytest.param(2, 2, 12, 12, 8, 11.0, id="same-length-pt-limit"),
]


def _check_against_the_formula(B, H, Q, M, D, limit, seed=0, launches=None):
    """Output and all five gradients of the kernel against the formula, in float32."""
    torch.manual_seed(seed)
    K = Q + M
    make = lambda *s: torch.randn(*s, device=DEVICE).requires_grad_()  # noqa: E731
    qu, qv, k, v, rd = make(B, H, Q, D), make(B, H, Q, D), make(B, H, K, D), make(B, H, K, D), make(H, K, D)
    out = fused_attention(qu, qv, k, v, rd, limit, D**-0.5, launches=launches)
    want = reference(qu, qv, k, v, rd, limit, D**-0.5)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (qu, qv, k, v, rd), g)
    ref = torch.autograd.grad(want, (qu, qv, k, v, rd), g)
    for name, a, b in zip(("qu", "qv", "k", "v", "rd"), got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("B, H, Q, M, D, limit", SHAPES)
def test_kernel_matches_the_formula_in_float32(B, H, Q, M, D, limit):
    _check_against_the_formula(B, H, Q, M, D, limit)


BLOCKS = {  # launches per kernel: each kernel's block is its own (the log-sum-exp is per query, not per block)
    "16": dict(fwd=Launch(16, 4, 2), dq=Launch(16, 4, 1), dkdv=Launch(16, 4, 1)),
    "32": dict(fwd=Launch(32, 8, 2), dq=Launch(32, 8, 2), dkdv=Launch(32, 8, 1)),
    "64": dict(fwd=Launch(64, 8, 2), dq=Launch(64, 8, 2), dkdv=Launch(64, 8, 1)),
    "mixed": dict(fwd=Launch(64, 8, 2), dq=Launch(16, 4, 1), dkdv=Launch(32, 8, 1)),
}


@pytest.mark.parametrize("launches", BLOCKS.values(), ids=BLOCKS.keys())
@pytest.mark.parametrize("B, H, Q, M, D, limit", [SHAPES[2], SHAPES[3]])
def test_every_block_size_matches_the_formula(B, H, Q, M, D, limit, launches):
    """The band halves carried from key block to key block (and query block to query block) at every block size the
    launch table uses, with segments, memories and ranges that are not block multiples."""
    _check_against_the_formula(B, H, Q, M, D, limit, seed=1, launches=launches)


def test_half_precision_keys_with_float32_queries_as_autocast_gives_them():
    """Under autocast q + u is float32 while k and v are half: the kernel multiplies in the keys' dtype and
    accumulates in float32. (fp16 here: Triton's interpreter multiplies bf16 wrongly; bf16 is checked on a GPU.)"""
    torch.manual_seed(0)
    B, H, Q, M, D = 2, 2, 20, 13, 8
    K = Q + M
    make = lambda *s, dt=torch.float32: torch.randn(*s, device=DEVICE).to(dt).requires_grad_()  # noqa: E731
    qu, qv, rd = make(B, H, Q, D), make(B, H, Q, D), make(H, K, D)
    k, v = make(B, H, K, D, dt=torch.float16), make(B, H, K, D, dt=torch.float16)
    out = fused_attention(qu, qv, k, v, rd, math.inf, D**-0.5)
    assert out.dtype == torch.float16
    want = reference(qu.half().float(), qv.half().float(), k.float(), v.float(), rd.half().float(), math.inf, D**-0.5)
    torch.testing.assert_close(out.float(), want, rtol=0, atol=2e-3)
    out.float().sum().backward()
    assert (qu.grad.dtype, k.grad.dtype, rd.grad.dtype) == (torch.float32, torch.float16, torch.float32)
    assert all(torch.isfinite(t.grad.float()).all() for t in (qu, qv, k, v, rd))


def test_a_shorter_range_visits_fewer_key_blocks():
    """Key blocks wholly beyond the range, or in the future, are never visited: counted by the kernel itself."""
    Q, M, D = 128, 384, 8
    bm = bn = launch_for("fwd", "fp32", 90, Q, D).block
    t = lambda *s: torch.randn(*s, device=DEVICE)  # noqa: E731
    qu, qv, k, v, rd = t(1, 1, Q, D), t(1, 1, Q, D), t(1, 1, Q + M, D), t(1, 1, Q + M, D), t(1, Q + M, D)
    counts = {}
    for limit in (math.inf, 32.0):
        visits = []
        fused_attention(qu, qv, k, v, rd, limit, 1.0, visits)
        counts[limit] = int(visits[0].sum())
    # query block i0 sees keys [mlen + i0 - limit, mlen + i0 + bm):
    # from the first block, or from the one holding the start
    full = sum(math.ceil(min(M + i0 + bm, Q + M) / bn) for i0 in range(0, Q, bm))
    ranged = sum(math.ceil((M + i0 + bm - (M + i0 - 32) // bn * bn) / bn) for i0 in range(0, Q, bm))
    assert (counts[math.inf], counts[32.0]) == (full, ranged) and ranged < full / 3


PLANS = [
    dict(memory="6,0,9", attn_range="inf,inf,3"),
    dict(memory="lrm=1@interleave:12,srm=3"),
    dict(memory="5", same_length=True),
    dict(memory="5", same_length=True, same_length_rule="pt"),
    dict(memory="20", clamp_len=6),
]


def _pair(**plan):
    torch.manual_seed(0)
    plain = TransformerXL(tiny_config(n_layer=3, n_head=2, d_head=8, attn_impl="plain", **plan)).to(DEVICE)
    fused = TransformerXL(tiny_config(n_layer=3, n_head=2, d_head=8, attn_impl="fused", **plan)).to(DEVICE)
    fused.load_state_dict(plain.state_dict())
    return plain, fused


def _run(model, tokens, tgt_len=5):
    mems, total = None, 0.0
    for start in range(0, tokens.size(1) - 1, tgt_len):
        y = tokens[:, start + 1 : start + 1 + tgt_len]
        nll, mems = model(tokens[:, start : start + y.size(1)], mems, y)
        total = total + nll.sum()
    total.backward()
    return total, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("plan", PLANS, ids=["mixed-range", "lrm", "same-length-tf", "same-length-pt", "clamp-len"])
def test_a_model_on_the_fused_path_matches_plain(plan):
    """Loss and every parameter's gradient (u, v and W_r included), segments carrying memory."""
    plain, fused = _pair(**plan)
    tokens = torch.randint(0, 23, (2, 21), device=DEVICE)
    loss_p, grads_p = _run(plain, tokens)
    loss_f, grads_f = _run(fused, tokens)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-5, atol=1e-4)
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-4, atol=1e-5, msg=name)


def test_untied_biases_and_dropout_fall_back():
    plain, fused = _pair(memory="6", untie_r=True)
    tokens = torch.randint(0, 23, (2, 11), device=DEVICE)
    loss_p, grads_p = _run(plain, tokens)
    loss_f, grads_f = _run(fused, tokens)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-5, atol=1e-4)
    assert any("r_w_bias" in n for n in grads_f)
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-4, atol=1e-5, msg=name)
    model = TransformerXL(tiny_config(n_layer=1, attn_impl="fused", dropatt=0.1))
    ctx = model.context(4, model.init_mems(), torch.device("cpu"))
    assert model.layers[0].attn.pick_impl(ctx) == "sdpa"  # no attention dropout in the kernel
    model.eval()
    assert model.layers[0].attn.pick_impl(ctx) == "fused"


@pytest.mark.gpu
def test_bf16_fused_matches_float32_plain_on_gpu():
    plain, fused = _pair(memory="lrm=1@interleave:40,srm=8", attn_range="inf,16,inf")
    tokens = torch.randint(0, 23, (4, 65), device="cuda")
    loss_p, _ = _run(plain, tokens, tgt_len=16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss_b, _ = _run(fused, tokens, tgt_len=16)
    torch.testing.assert_close(loss_b.float(), loss_p, rtol=2e-2, atol=0)


def test_fused_is_refused_in_one_line_where_it_cannot_run(monkeypatch):
    from txl.attention import fused
    from txl.attention.fast import resolve_impl
    from txl.core.errors import TxlError

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(TxlError, match="needs triton and a GPU"):
        resolve_impl("fused", torch.device("cpu"))
    monkeypatch.setattr(fused, "triton", None)
    assert not fused.available(torch.device("cuda"))


@pytest.mark.parametrize("budget", [None, 1], ids=["one-launch", "a-launch-per-sequence"])
def test_deterministic_algorithms_sum_the_position_gradient_without_atomics(monkeypatch, budget):
    """Under torch.use_deterministic_algorithms the dq kernel stores each program's position gradient in a slice of its
    own (each distance once per program), summed in a fixed order, in as many launches as keep the slices within a
    bound (here also one sequence at a time): the same gradients as the formula either way."""
    from txl.attention import fused

    if budget is not None:
        monkeypatch.setattr(fused, "DETERMINISTIC_BUFFER_BYTES", budget)
    chunks = []
    real = fused.batch_chunks
    monkeypatch.setattr(fused, "batch_chunks", lambda *a: chunks.append(real(*a)) or chunks[-1])
    torch.manual_seed(2)
    B, H, Q, M, D = 2, 2, 40, 30, 8
    make = lambda *s: torch.randn(*s, device=DEVICE).requires_grad_()  # noqa: E731
    qu, qv, k, v, rd = make(B, H, Q, D), make(B, H, Q, D), make(B, H, Q + M, D), make(B, H, Q + M, D), make(H, Q + M, D)
    launches = dict(fwd=Launch(16, 4, 2), dq=Launch(16, 4, 1), dkdv=Launch(16, 4, 1))
    g = torch.randn(B, H, Q, D, device=DEVICE)
    want = torch.autograd.grad(reference(qu, qv, k, v, rd, 25.0, D**-0.5), (qu, qv, k, v, rd), g)
    got = {}
    for deterministic in (False, True):
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda d=deterministic: d)
        out = fused_attention(qu, qv, k, v, rd, 25.0, D**-0.5, launches=launches)
        got[deterministic] = torch.autograd.grad(out, (qu, qv, k, v, rd), g)
    assert chunks == [[(0, B)], [(0, B)] if budget is None else [(0, 1), (1, 2)]]
    for deterministic, grads in got.items():
        for name, a, b in zip(("qu", "qv", "k", "v", "rd"), grads, want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{name} deterministic={deterministic}")


def test_half_precision_gradients_follow_the_formula():
    """fp16 operands (float32 accumulation) against the formula in float32 on the same rounded inputs: output and all
    five gradients within half-precision error, each gradient in its input's dtype (rd float32 here, as a caller
    outside autocast may give it)."""
    torch.manual_seed(3)
    B, H, Q, M, D = 1, 2, 40, 30, 16
    K = Q + M
    half = lambda *s: torch.randn(*s, device=DEVICE).half().requires_grad_()  # noqa: E731
    qu, qv, k, v = half(B, H, Q, D), half(B, H, Q, D), half(B, H, K, D), half(B, H, K, D)
    rd = torch.randn(H, K, D, device=DEVICE).half().float().requires_grad_()
    out = fused_attention(
        qu, qv, k, v, rd, 25.0, D**-0.5, launches=dict(fwd=Launch(16, 4, 2), dq=Launch(16, 4, 1), dkdv=Launch(16, 4, 1))
    )
    g = torch.randn(B, H, Q, D, device=DEVICE).half()
    got = torch.autograd.grad(out, (qu, qv, k, v, rd), g)
    assert [t.dtype for t in got] == [torch.float16] * 4 + [torch.float32]
    exact = [t.detach().float().requires_grad_() for t in (qu, qv, k, v, rd)]
    want = reference(*exact, 25.0, D**-0.5)
    torch.testing.assert_close(out.float(), want, rtol=0, atol=5e-3)
    ref = torch.autograd.grad(want, exact, g.float())
    for name, a, b in zip(("qu", "qv", "k", "v", "rd"), got, ref):
        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=2e-2 * float(b.abs().max()), msg=name)


def test_a_block_that_is_not_a_power_of_two_is_refused():
    t = torch.randn(1, 1, 8, 8, device=DEVICE)
    with pytest.raises(ValueError, match="dq kernel's block must be a power of two >= 16, not 24"):
        fused_attention(
            t, t, t, t, torch.randn(1, 8, 8, device=DEVICE), math.inf, 1.0, launches={"dq": Launch(24, 4, 1)}
        )


def test_the_kernel_is_one_operator_that_torch_compile_does_not_break_on():
    """Registered as custom operators with fake implementations: torch.library.opcheck passes (schema, autograd, fake
    tensors, AOT dispatch), a model step traces into one graph with no break, and compiled forward and backward
    (AOTAutograd, eager kernels) give eager's loss and gradients."""
    from txl.attention.fused_op import _fwd_op

    t = lambda *s: torch.randn(*s, device=DEVICE).requires_grad_()  # noqa: E731
    args = (
        t(1, 2, 20, 16),
        t(1, 2, 20, 16),
        t(1, 2, 32, 16),
        t(1, 2, 32, 16),
        t(2, 32, 16),
        32,
        0.25,
        [16, 4, 2, 16, 4, 1, 16, 4, 1],
        "ieee",
    )
    assert set(torch.library.opcheck(_fwd_op, args).values()) == {"SUCCESS"}

    plain, model = _pair(memory="6")
    tokens = torch.randint(0, 23, (2, 11), device=DEVICE)

    def step(x, y, mems):
        nll, _ = model(x, mems, y)
        return nll.sum()

    x, y = tokens[:, :5], tokens[:, 1:6]
    explained = torch._dynamo.explain(step)(x, y, model.init_mems())
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    eager = step(x, y, model.init_mems())
    eager.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)(x, y, model.init_mems())
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], msg=n)
