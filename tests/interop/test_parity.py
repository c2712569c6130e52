"""Parity with the source of an imported model, under both same_length rules.

The reference below is written from the original PyTorch code's equations (MemTransformerLM
with RelPartialLearnableDecoderLayer, post-LayerNorm, one softmax cluster), independently of
txl's modules: its own rel-shift by explicit indexing, and masks built the way each source
builds them. Weights are made in the original layout from a fixed seed and imported.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from txl.interop.convert import import_state

V, L, D, H, DH, DI = 20, 2, 16, 2, 8, 32


def original_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.2):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    t = {"word_emb.emb_layers.0.weight": rnd(V, D), "r_w_bias": rnd(H, DH), "r_r_bias": rnd(H, DH)}
    t["pos_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0.0, D, 2.0, dtype=torch.float64) / D))
    for i in range(L):
        p = f"layers.{i}."
        t.update(
            {
                p + "dec_attn.qkv_net.weight": rnd(3 * H * DH, D),
                p + "dec_attn.o_net.weight": rnd(D, H * DH),
                p + "dec_attn.r_net.weight": rnd(H * DH, D),
                p + "dec_attn.layer_norm.weight": 1 + rnd(D, scale=0.05),
                p + "dec_attn.layer_norm.bias": rnd(D, scale=0.05),
                p + "pos_ff.CoreNet.0.weight": rnd(DI, D),
                p + "pos_ff.CoreNet.0.bias": rnd(DI, scale=0.05),
                p + "pos_ff.CoreNet.3.weight": rnd(D, DI),
                p + "pos_ff.CoreNet.3.bias": rnd(D, scale=0.05),
                p + "pos_ff.layer_norm.weight": 1 + rnd(D, scale=0.05),
                p + "pos_ff.layer_norm.bias": rnd(D, scale=0.05),
            }
        )
    t["crit.out_layers.0.weight"] = t["word_emb.emb_layers.0.weight"]
    t["crit.out_layers.0.bias"] = rnd(V, scale=0.05)
    return t


def pytorch_mask(qlen: int, mlen: int, mem_len: int) -> torch.Tensor:
    """True where masked: the original PyTorch code's same_length construction."""
    klen = mlen + qlen
    ones = torch.ones(qlen, klen)
    mask_len = klen - mem_len
    mask_shift_len = qlen - mask_len if mask_len > 0 else qlen
    return (torch.triu(ones, 1 + mlen) + torch.tril(ones, -mask_shift_len)) > 0


def window_mask(qlen: int, mlen: int, mem_len: int) -> torch.Tensor:
    """True where masked: the TensorFlow rule, every query sees distances 0..mem_len."""
    mask = torch.zeros(qlen, mlen + qlen, dtype=torch.bool)
    for i in range(qlen):
        for j in range(mlen + qlen):
            d = mlen + i - j
            mask[i, j] = d < 0 or d > mem_len
    return mask


def reference_losses(t, segments, targets, mem_len, clamp_len, make_mask):
    """Per-token losses, segment by segment with each layer's memory of its input, in float64."""
    mems = [torch.zeros(targets[0].size(0), 0, D, dtype=torch.float64) for _ in range(L)]
    out = []
    for x, y in zip(segments, targets):
        bsz, qlen = x.shape
        mlen = mems[0].size(1)
        klen = mlen + qlen
        dist = torch.arange(klen - 1, -1, -1, dtype=torch.float64)  # row r holds distance klen-1-r
        if clamp_len is not None:
            dist = dist.clamp(max=clamp_len)
        angles = dist[:, None] * t["pos_emb.inv_freq"][None, :]
        pos = torch.cat([angles.sin(), angles.cos()], -1)
        h = t["word_emb.emb_layers.0.weight"][x] * math.sqrt(D)
        mask = make_mask(qlen, mlen, mem_len)
        new_mems = []
        for i in range(L):
            p = f"layers.{i}."
            cat = torch.cat([mems[i], h], 1)
            new_mems.append(cat[:, -mem_len:] if mem_len else cat[:, :0])
            q, k, v = (cat @ t[p + "dec_attn.qkv_net.weight"].T).chunk(3, -1)
            q = q[:, -qlen:].view(bsz, qlen, H, DH)
            k, v = k.view(bsz, klen, H, DH), v.view(bsz, klen, H, DH)
            r = (pos @ t[p + "dec_attn.r_net.weight"].T).view(klen, H, DH)
            ac = torch.einsum("bihd,bjhd->bhij", q + t["r_w_bias"], k)
            bd_full = torch.einsum("bihd,rhd->bhir", q + t["r_r_bias"], r)
            bd = torch.zeros_like(ac)
            for qi in range(qlen):
                for kj in range(klen):
                    d = mlen + qi - kj
                    if d >= 0:
                        bd[:, :, qi, kj] = bd_full[:, :, qi, klen - 1 - d]
            score = (ac + bd) * DH**-0.5
            prob = score.masked_fill(mask, -math.inf).softmax(-1)
            vec = torch.einsum("bhij,bjhd->bihd", prob, v).reshape(bsz, qlen, H * DH)
            a = F.layer_norm(
                h + vec @ t[p + "dec_attn.o_net.weight"].T,
                (D,),
                t[p + "dec_attn.layer_norm.weight"],
                t[p + "dec_attn.layer_norm.bias"],
            )
            ff = F.relu(a @ t[p + "pos_ff.CoreNet.0.weight"].T + t[p + "pos_ff.CoreNet.0.bias"])
            ff = ff @ t[p + "pos_ff.CoreNet.3.weight"].T + t[p + "pos_ff.CoreNet.3.bias"]
            h = F.layer_norm(a + ff, (D,), t[p + "pos_ff.layer_norm.weight"], t[p + "pos_ff.layer_norm.bias"])
        mems = new_mems
        logits = h @ t["crit.out_layers.0.weight"].T + t["crit.out_layers.0.bias"]
        out.append(-logits.log_softmax(-1).gather(-1, y[..., None]).squeeze(-1))
    return torch.cat(out, 1)


def txl_losses(model, segments, targets):
    mems, out = None, []
    with torch.no_grad():
        for x, y in zip(segments, targets):
            nll, mems = model(x, mems, y)
            out.append(nll)
    return torch.cat(out, 1)


@pytest.mark.parametrize("rule", ["pt", "tf"])
@pytest.mark.parametrize("mem_len, tgt_len, clamp_len", [(7, 5, None), (3, 5, None), (12, 4, 6)])
def test_imported_model_matches_each_same_length_rule(rule, mem_len, tgt_len, clamp_len):
    t = original_tensors()
    hints = {"same_length": True, "mem_len": mem_len, "clamp_len": clamp_len, "dropout": 0.0}
    model = import_state({k: v.clone() for k, v in t.items()}, "original", hints).double().eval()
    assert model.cfg.same_length_rule == "pt"  # the source's own rule
    model.cfg.same_length_rule = rule
    g = torch.Generator().manual_seed(1)
    stream = torch.randint(0, V, (2, 5 * tgt_len + 1), generator=g)
    segments = [stream[:, s : s + tgt_len] for s in range(0, 5 * tgt_len, tgt_len)]
    targets = [stream[:, s + 1 : s + 1 + tgt_len] for s in range(0, 5 * tgt_len, tgt_len)]
    ref = reference_losses(t, segments, targets, mem_len, clamp_len, pytorch_mask if rule == "pt" else window_mask)
    ours = txl_losses(model, segments, targets)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)  # float64 throughout, the sinusoid included
    # and the two rules really differ once the memory is full (so the test can tell them apart)
    other = pytorch_mask if rule == "tf" else window_mask
    assert not torch.allclose(
        reference_losses(t, segments, targets, mem_len, clamp_len, other)[:, 2 * tgt_len :],
        ref[:, 2 * tgt_len :],
        atol=1e-6,
    )


def test_without_same_length_the_rules_agree():
    t = original_tensors()
    model = (
        import_state({k: v.clone() for k, v in t.items()}, "original", {"mem_len": 6, "dropout": 0.0}).double().eval()
    )
    stream = torch.randint(0, V, (2, 21), generator=torch.Generator().manual_seed(2))
    segments = [stream[:, s : s + 5] for s in range(0, 20, 5)]
    targets = [stream[:, s + 1 : s + 6] for s in range(0, 20, 5)]
    causal = lambda q, m, mem_len: window_mask(q, m, 10**9)  # noqa: E731
    torch.testing.assert_close(
        txl_losses(model, segments, targets), reference_losses(t, segments, targets, 6, None, causal), rtol=0, atol=1e-6
    )


def test_div_val_without_cutoffs_imports_with_its_projection():
    """div_val > 1 and no cutoffs: one table, but a projection even when it is square."""
    t = original_tensors()
    t["word_emb.emb_projs.0"] = torch.randn(D, D, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 0.2
    t["crit.out_projs.0"] = t["word_emb.emb_projs.0"]
    model = import_state(t, "original", {"div_val": 4, "dropout": 0.0}).eval()
    assert model.cfg.div_val == 4 and model.cfg.cutoffs == [] and len(model.embed.emb_projs) == 1
    tokens = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        emb = t["word_emb.emb_layers.0.weight"][tokens] @ t["word_emb.emb_projs.0"].T * math.sqrt(D)
        torch.testing.assert_close(model.embed(tokens), emb)


def test_an_exported_model_scores_the_same_under_the_originals_equations():
    """A txl model (one memory length, same_length under the pt rule) exported to the original layout, then scored
    by the reference above from the exported tensors and config alone: the losses agree to float64 rounding."""
    from txl.config import ModelConfig
    from txl.interop.convert import export_state
    from txl.model.plans import apply_plans
    from txl.model.transformer import TransformerXL

    torch.manual_seed(3)
    fields = dict(vocab_size=V, n_layer=L, d_model=D, n_head=H, d_head=DH, d_inner=DI, dropout=0.0, dropatt=0.0)
    cfg = apply_plans(ModelConfig(**fields, same_length=True, same_length_rule="pt"), memory="6")
    model = TransformerXL(cfg).double().eval()
    tensors, config = export_state(model, "original")
    stream = torch.randint(0, V, (2, 21), generator=torch.Generator().manual_seed(4))
    segments = [stream[:, s : s + 5] for s in range(0, 20, 5)]
    targets = [stream[:, s + 1 : s + 6] for s in range(0, 20, 5)]
    ref = reference_losses(tensors, segments, targets, config["mem_len"], None, pytorch_mask)
    torch.testing.assert_close(txl_losses(model, segments, targets), ref, rtol=0, atol=1e-10)
