"""Every registered attention variant: the core identities, plus each variant's own checks."""

import pytest
import torch
from conftest import run_segments, tiny_config

from txl.attention import VARIANTS, unbounded_layers
from txl.attention.fastrpb import causal_conv_fft, toeplitz
from txl.attention.las import causal_pool, head_alphas
from txl.attention.masks import visible
from txl.attention.sikf import quadratic
from txl.cli import main
from txl.config import ConfigError
from txl.model.budget import budget, param_count
from txl.model.plans import check_model
from txl.model.transformer import TransformerXL
from txl.plan.reach import earliest_dependency

ALL = [name for name in VARIANTS] + [f"{name}+fastrpb" for name in VARIANTS]


def unchanged(a: torch.Tensor, b: torch.Tensor, attn: str) -> bool:
    """Exactly equal, or for FastRPB (whose FFT sums every position) equal to float64 rounding.

    A real leak through a weight moves outputs by far more than 1e-10.
    """
    if "fastrpb" in attn:
        return (a - b).abs().max().item() < 1e-10
    return torch.equal(a, b)


def build(attn: str, seed: int = 0, n_layer: int = 3, **kw) -> TransformerXL:
    """The variant in every layer but the top one, which stays xl (so mixed models are tested too)."""
    torch.manual_seed(seed)
    kw.setdefault("n_head", 4)
    kw.setdefault("d_head", 4)
    cfg = tiny_config(n_layer=n_layer, attn=f"attn={attn}@first:{n_layer - 1},xl", **kw)
    cfg.las.kernel = 3
    return TransformerXL(cfg).eval()


def randomize_rpb(model: TransformerXL) -> None:
    """FastRPB starts near zero; give it weights big enough to matter in the identities."""
    for name, p in model.named_parameters():
        if name.endswith("rpb.weight"):
            with torch.no_grad():
                p.normal_(0, 0.3)


@pytest.mark.parametrize("attn", ALL)
def test_forward_and_backward(attn):
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=2, attn=attn, memory="6"))
    model.train()
    mems = None
    for _ in range(2):
        tokens = torch.randint(0, 23, (2, 5))
        loss, mems = model(tokens, mems, targets=tokens.roll(-1, 1))
        loss.mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
        n for n, g in grads.items() if g is None
    ]
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("attn", ALL)
def test_segments_with_full_memory_equal_one_piece(attn):
    model = build(attn, memory="64")
    randomize_rpb(model)
    tokens = torch.randint(0, 23, (2, 30))
    whole, _ = model(tokens)
    torch.testing.assert_close(run_segments(model, tokens, 6, hidden=False), whole, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("attn", ALL)
@pytest.mark.parametrize(
    "plan", [dict(memory="5,2,7"), dict(memory="6,0,3", attn_range="3,inf,inf")], ids=["mem", "range"]
)
def test_causality_across_segments(attn, plan, float64):
    if attn.startswith("sikf") and "attn_range" in plan:
        plan = dict(memory="6,0,3", attn_range="inf,inf,2")  # sikf layers cannot limit their range
    model = build(attn, **plan)
    randomize_rpb(model)
    tokens = torch.randint(0, 23, (1, 24))
    base = run_segments(model, tokens, 4)
    for t in (2, 9, 17):
        changed = tokens.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 5) % 23
        assert unchanged(run_segments(model, changed, 4)[:, : t + 1], base[:, : t + 1], attn)


@pytest.mark.parametrize("attn", ALL)
def test_receptive_field_is_exact(attn, float64):
    plan = (
        dict(memory="5,2,3", attn_range="inf,inf,1")
        if attn.startswith("sikf")
        else dict(memory="5,2,3", attn_range="2,inf,1")
    )
    model = build(attn, **plan)
    randomize_rpb(model)
    cfg = model.cfg
    tokens = torch.randint(0, 23, (1, 28))
    base = run_segments(model, tokens, 4)
    free = unbounded_layers(cfg)
    for t in (21, 27):
        first = earliest_dependency(cfg.mem_lens, cfg.attn_ranges, 4, t, cfg.same_length, free)
        for p, should_change in ((first - 1, False), (first, True)):
            if p < 0:
                continue
            changed = tokens.clone()
            changed[0, p] = (changed[0, p] + 1) % 23
            out = run_segments(model, changed, 4)[0, t]
            assert unchanged(out, base[0, t], attn) != should_change, f"{attn}: token {p} and output {t}"


@pytest.mark.parametrize("attn", ALL)
def test_state_sizes_and_parameters_match_the_budget(attn):
    model = build(attn, memory="5,2,3")
    mems = None
    for _ in range(4):
        _, mems = model(torch.randint(0, 23, (2, 4)), mems)
    b = budget(model.cfg, tgt_len=4, batch=2)
    for state, layer in zip((c.to_dict() for c in mems), b.layers):
        assert (state["h"].size(1) if "h" in state else 0) == layer.cached_positions
        state_values = sum(t.numel() for k, t in state.items() if k != "h")
        assert state_values == layer.state_values * 2  # per sequence, batch of 2
        assert all(not t.requires_grad for t in state.values())
    assert param_count(model.cfg) == model.num_params()


# --------------------------------------------------------------------------- LaS


def test_las_adds_no_parameters_and_with_no_decay_and_kernel_1_equals_xl():
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=3, attn="las", n_head=4, d_head=4)
    cfg.las.alphas, cfg.las.kernel = [0.0] * 4, 1
    las = TransformerXL(cfg).eval()
    xl_cfg = tiny_config(n_layer=3, n_head=4, d_head=4)
    xl = TransformerXL(xl_cfg).eval()
    assert {k: v.shape for k, v in las.state_dict().items()} == {k: v.shape for k, v in xl.state_dict().items()}
    assert las.num_params() == xl.num_params()
    las.load_state_dict(xl.state_dict())
    tokens = torch.randint(0, 23, (2, 20))
    assert torch.equal(run_segments(las, tokens, 5), run_segments(xl, tokens, 5))


def test_las_parts_switch_separately():
    tokens = torch.randint(0, 23, (2, 16))

    def model(attn, **las):
        torch.manual_seed(1)
        cfg = tiny_config(n_layer=2, attn=attn, n_head=4, d_head=4)
        for k, v in las.items():
            setattr(cfg.las, k, v)
        return TransformerXL(cfg).eval()

    local = run_segments(model("las-local", kernel=5), tokens, 4)
    assert torch.equal(local, run_segments(model("las", kernel=1), tokens, 4))
    smooth = run_segments(model("las-smooth", kernel=3), tokens, 4)
    assert torch.equal(smooth, run_segments(model("las", kernel=3, alphas=[0.0] * 4), tokens, 4))
    assert not torch.allclose(local, smooth)


def test_default_alpha_schedule_has_one_global_head():
    cfg = tiny_config(n_head=4)
    alphas = head_alphas(cfg)
    assert alphas[0] == 0.0 and all(a > 0 for a in alphas[1:])
    assert alphas[1] == pytest.approx(cfg.las.alpha_min) and alphas[-1] == pytest.approx(cfg.las.alpha_max)


@pytest.mark.parametrize("kernel", [2, 3, 5])
def test_pooled_rows_sum_to_one_and_stay_lower_triangular(kernel):
    qlen, klen, limit = 6, 10, 5
    mask = visible(qlen, klen, limit)
    scores = torch.randn(2, 3, qlen, klen).masked_fill(~mask, float("-inf"))
    pooled = causal_pool(scores.softmax(-1), kernel, mask)
    torch.testing.assert_close(pooled.sum(-1), torch.ones(2, 3, qlen))
    assert (pooled[..., ~mask] == 0).all()  # no future key, nothing beyond the range
    assert (pooled[..., mask] > 0).all()


# --------------------------------------------------------------------------- FastRPB


def test_fastrpb_fft_equals_the_explicit_toeplitz_product():
    torch.manual_seed(0)
    w = torch.randn(3, 37, dtype=torch.float64)
    v = torch.randn(2, 3, 37, 5, dtype=torch.float64)
    explicit = toeplitz(w, 37) @ v
    torch.testing.assert_close(causal_conv_fft(w, v), explicit, rtol=1e-10, atol=1e-10)
    ones = torch.ones(3, 37, dtype=torch.float64)
    torch.testing.assert_close(causal_conv_fft(ones, v), v.cumsum(-2), rtol=1e-10, atol=1e-10)


def test_fastrpb_with_zero_weights_equals_the_base_variant():
    for base in ("xl", "sikf", "alibi"):
        plain = build(base)
        with_rpb = build(f"{base}+fastrpb")
        state = {k: v for k, v in plain.state_dict().items()}
        missing = with_rpb.load_state_dict(state, strict=False).missing_keys
        assert missing and all(k.endswith("rpb.weight") for k in missing)
        for name, p in with_rpb.named_parameters():
            if name.endswith("rpb.weight"):
                torch.nn.init.zeros_(p)
        tokens = torch.randint(0, 23, (2, 12))
        torch.testing.assert_close(
            run_segments(with_rpb, tokens, 4), run_segments(plain, tokens, 4), rtol=1e-6, atol=1e-6
        )


def test_fastrpb_kernel_respects_range_and_max_len():
    cfg = tiny_config(n_layer=1, attn="xl+fastrpb")
    cfg.fastrpb.max_len = 6
    model = TransformerXL(cfg)
    rpb = model.layers[0].attn.rpb
    k = rpb.kernel(10, limit=4)
    assert (k[:, 5:] == 0).all() and (k[:, :5] != 0).all()
    assert (rpb.kernel(10, limit=100)[:, 6:] == 0).all()


# --------------------------------------------------------------------------- SIKF


@pytest.mark.parametrize("chunk", [1, 3, 8, 64])
def test_sikf_chunked_equals_quadratic(chunk):
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=1, attn="sikf", memory="0", n_head=2, d_head=4)
    cfg.sikf.chunk = chunk
    attn = TransformerXL(cfg).layers[0].attn
    q, k, v = (torch.randn(2, 2, 13, 4, dtype=torch.float64) for _ in range(3))
    got, _ = attn.attend_stateful(q, k, v, float("inf"), None, {})
    fq = torch.exp(q - q.mean(dim=-1, keepdim=True))
    fk = torch.exp(k)  # a first segment: the key reference starts at 0
    torch.testing.assert_close(got, quadratic(fq, fk, v), rtol=1e-10, atol=1e-10)


def test_sikf_carried_state_equals_one_piece(float64):
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=2, attn="sikf", memory="1", n_head=2, d_head=4)
    cfg.sikf.chunk = 3
    model = TransformerXL(cfg).eval()
    tokens = torch.randint(0, 23, (2, 40))
    torch.testing.assert_close(run_segments(model, tokens, 7), model.hidden(tokens)[0], rtol=1e-9, atol=1e-9)
    # without memory the state is not carried and later segments differ
    cold = TransformerXL(tiny_config(n_layer=2, attn="sikf", memory="0", n_head=2, d_head=4)).eval()
    cold.load_state_dict(model.state_dict())
    assert not torch.allclose(run_segments(cold, tokens, 7), model.hidden(tokens)[0])


# --------------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(attn="sikf", attn_range="4"),
            "model.layers.0: attention variant 'sikf' keeps running sums, not keys, so it cannot limit attn_range (4)",
        ),
        (dict(attn="sikf", same_length=True), "so model.same_length cannot apply"),
        (dict(attn="las", las_kernel=0), "model.las.kernel must be >= 1, got 0"),
        (
            dict(attn="whatever"),
            "unknown attention variant 'whatever' (known: xl, las, las-local, las-smooth, alibi, t5, sikf)",
        ),
    ],
)
def test_configuration_errors_are_one_line(change, message):
    kernel = change.pop("las_kernel", None)
    with pytest.raises(ConfigError) as err:
        cfg = tiny_config(n_layer=2, **change)
        if kernel is not None:
            cfg.las.kernel = kernel
        check_model(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_rejects_a_plan_the_variant_cannot_use(capsys):
    assert main(["budget", "--layers", "4", "--attn", "sikf", "--range", "range=128@first:2"]) == 2
    err = capsys.readouterr().err
    assert "cannot limit attn_range" in err and err.count("\n") == 1


def test_budget_reports_each_variants_memory_and_flops(capsys):
    assert main(["budget", "--layers", "2", "--memory", "512", "--attn", "attn=sikf@first:1,las", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    sikf, las = data["layers"]
    assert sikf["attn"] == "sikf" and sikf["cached_positions"] == 0
    assert sikf["bytes"] == 8 * (64 * 64 + 64 + 2) * 4  # running sums: O(d_head^2) per head, not O(mem_len)
    assert las["cached_positions"] == 512 and las["bytes"] == 512 * 512 * 4
    assert sikf["attn_flops_per_token"] > 0 and las["attn_flops_per_token"] > sikf["attn_flops_per_token"]
    assert data["receptive_field"] == [float("inf"), float("inf")]
