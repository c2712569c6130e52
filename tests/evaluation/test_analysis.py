"""txl.evaluation.analysis: context ablation, where each layer looks, per-layer sensitivity, RECL."""

import json

import numpy as np
import pytest
import torch
from conftest import run_segments, tiny_config, tiny_run

from txl.cli import main
from txl.data import load_corpus
from txl.evaluation.evaluate import EvalSpec
from txl.model.transformer import TransformerXL
from txl.train.loop import Trainer


def test_context_ablation_sees_nothing_beyond_the_receptive_field():
    from types import SimpleNamespace

    from txl.evaluation.context_ablation import context_curve, effective_context

    torch.manual_seed(0)
    model = TransformerXL(
        tiny_config(n_layer=2, memory="0", attn_range="2")
    ).eval()  # reach: 2 tokens per layer, 4 in all
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6)  # an untrained model barely uses context; larger weights make it matter
    corpus = SimpleNamespace(splits={"valid": np.random.default_rng(0).integers(0, 23, 5000)})
    spec = EvalSpec(split="valid", tgt_len=64)  # one segment per window
    rows = context_curve(model, corpus, spec, [0, 1, 8, 32], score=4, windows=16)
    assert [r["context"] for r in rows] == [0, 1, 8, 32]
    for r in rows[
        2:
    ]:  # 8 and 32 tokens of context: beyond the reach, so cutting, shuffling or replacing it changes nothing
        assert r["cut"] == pytest.approx(r["shuffled"], abs=1e-5) and r["cut"] == pytest.approx(r["random"], abs=1e-5)
        assert r["cut"] == pytest.approx(rows[-1]["cut"], abs=1e-5)
    assert abs(rows[0]["cut"] - rows[-1]["cut"]) > 1e-2  # within the reach, it does
    assert effective_context(rows, tolerance=1e-5) == 8


def test_attention_mass_equals_brute_force_over_stored_probabilities():
    from txl.evaluation.analysis import AttentionMass, distance_edges

    torch.manual_seed(0)
    model = TransformerXL(
        tiny_config(n_layer=3, memory="6,2,5", attn_range="inf,inf,3", attn="attn=las@first:1,alibi@last:1,xl")
    ).eval()
    edges = distance_edges(12)
    probe, stored = AttentionMass(model, edges, beyond=(2, 5)), []
    layer = {id(block.attn): i for i, block in enumerate(model.layers)}

    def both(attn, probs):
        probe(attn, probs)
        stored.append((layer[id(attn)], probs.detach().double().clone()))

    model.probe = both
    with torch.no_grad():
        run_segments(model, torch.randint(0, 23, (2, 20)), 4)
    mass, dist, memory, far, queries = (
        np.zeros((3, 2, len(edges) - 1)),
        np.zeros((3, 2)),
        np.zeros((3, 2)),
        np.zeros((2, 3, 2)),
        np.zeros(3),
    )
    for i, p in stored:  # every probability, one by one
        b, h, q, k = p.shape
        queries[i] += b * q
        for hh in range(h):
            for qi in range(q):
                for kj in range(k):
                    d = (k - q) + qi - kj
                    if d < 0:
                        continue
                    w = float(p[:, hh, qi, kj].sum())
                    mass[i, hh, next(n for n in range(len(edges) - 1) if edges[n] <= d < edges[n + 1])] += w
                    dist[i, hh] += w * d
                    memory[i, hh] += w * (kj < k - q)
                    for n, limit in enumerate((2, 5)):
                        far[n, i, hh] += w * (d > limit)
    got = probe.result()
    np.testing.assert_allclose(np.array(got["mass"]), mass / queries[:, None, None], atol=1e-12)
    np.testing.assert_allclose(np.array(got["mean_distance"]), dist / queries[:, None], atol=1e-12)
    np.testing.assert_allclose(np.array(got["in_memory"]), memory / queries[:, None], atol=1e-12)
    np.testing.assert_allclose(np.array(got["beyond"]["5"]), far[1] / queries[:, None], atol=1e-12)
    assert np.allclose(np.array(got["mass"]).sum(-1), 1.0)  # every query's probabilities sum to one
    assert got["layers_with_probabilities"] == [0, 1, 2]


def test_attention_mass_is_the_same_whatever_path_the_model_runs_on():
    from txl.config import DataConfig, SyntheticConfig
    from txl.data import load_corpus
    from txl.evaluation.analysis import attention_mass

    corpus = load_corpus(
        DataConfig(corpus="copy", synthetic=SyntheticConfig(lags=[4], train_tokens=4000, eval_tokens=2000)),
        progress=False,
    )
    results = []
    for impl in ("plain", "sdpa"):
        torch.manual_seed(0)
        model = TransformerXL(tiny_config(n_layer=2, memory="6", vocab_size=corpus.vocab_size, attn_impl=impl)).eval()
        results.append(attention_mass(model, corpus, EvalSpec(split="valid", tgt_len=8, batch_size=4, max_segments=5)))
        assert model.cfg.attn_impl == impl and model.probe is None  # restored
    assert results[0]["mass"] == results[1]["mass"] and results[0]["loss"] == results[1]["loss"]


def test_recl_is_where_the_relative_gain_over_the_group_stops():
    """Two runs: one keeps gaining to 64 tokens of context, one stops at 16 (Dai et al.'s RECL, appendix C)."""
    import numpy as np
    import pytest

    from txl.core.errors import TxlError
    from txl.evaluation.context_ablation import recl

    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 0.5, 200)  # the same tokens for both runs, some harder than others

    def curve(by_length):
        return [{"context": c, "cut_tokens": list(loss + noise)} for c, loss in by_length.items()]

    far = curve({0: 3.0, 4: 2.5, 16: 2.0, 64: 1.5, 256: 1.5})
    near = curve({0: 3.0, 4: 2.5, 16: 2.0, 64: 2.0, 256: 2.0})
    assert recl({"far": far, "near": near}) == {"far": (64, False), "near": (16, False)}
    still = curve({0: 3.0, 4: 2.5, 16: 2.0, 64: 1.5, 256: 1.0})
    assert recl({"still": still, "near": near})["still"] == (256, True)  # never stopped: a lower bound
    with pytest.raises(TxlError, match="the same tokens"):
        recl({"far": far, "short": [{"context": c, "cut_tokens": [1.0] * 10} for c in (0, 4, 16, 64, 256)]})


@pytest.mark.slow
def test_layer_sensitivity_equals_evaluating_each_cut_plan(tmp_path, capsys):
    from txl.evaluation.analysis import layer_sensitivity
    from txl.train.runs import load_trained

    run = tiny_run(tmp_path, **{"train.steps": 20})
    Trainer(run, tmp_path / "run", progress=False).fit()
    loaded = load_trained(tmp_path / "run", "cpu")
    model, trained = loaded.model, loaded.run
    corpus = load_corpus(trained.data, progress=False)
    spec = EvalSpec(split="valid", tgt_len=16, batch_size=4, max_segments=6)
    base, rows = layer_sensitivity(model, corpus, spec, short=4)
    assert [(r["layer"], r["mem_len"]) for r in rows] == [(0, 0), (0, 4), (1, 0), (1, 4)]  # memory 16 in both layers
    from txl.core.stats import holm  # the four cuts are tested at once: beyond noise after Holm's adjustment

    assert [r["p_holm"] for r in rows] == holm([r["p"] for r in rows])
    assert all(r["beyond_noise"] == (r["p_holm"] < 0.05) for r in rows)
    assert (
        main(
            [
                "eval",
                str(tmp_path / "run"),
                "--memory",
                "4,16",
                "--split",
                "valid",
                "--tgt-len",
                "16",
                "--batch-size",
                "4",
                "--max-segments",
                "6",
                "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    same = json.loads(capsys.readouterr().out)["results"][0]
    assert rows[1]["loss"] == pytest.approx(same["loss"], rel=1e-12)  # layer 0 cut to 4 is the plan 4,16
    assert all(
        r["rise_lo"] <= r["rise"] <= r["rise_hi"] and r["rise"] == pytest.approx(r["loss"] - base.loss) for r in rows
    )
    assert (
        main(["analyze", "sensitivity", str(tmp_path / "run"), "--short", "4", "--max-segments", "6", "--no-progress"])
        == 0
    )
    out = capsys.readouterr().out
    assert "memory sensitivity of" in out and "beyond noise" in out
    assert (tmp_path / "run" / "analysis" / "sensitivity.png").stat().st_size > 0
    assert (
        main(
            ["analyze", "context", str(tmp_path / "run"), "--lengths", "4,16", "--windows", "4", "--out", str(tmp_path)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "effective context of" in out and (tmp_path / "context.png").stat().st_size > 0
    assert [
        r["context"] for r in json.loads((tmp_path / "context.json").read_text())["curves"][str(tmp_path / "run")]
    ] == [0, 4, 16]
    assert main(["analyze", "attention", str(tmp_path / "run"), "--max-segments", "4"]) == 0
    assert (
        "mean distance" in capsys.readouterr().out
        and (tmp_path / "run" / "analysis" / "attention.png").stat().st_size > 0
    )


def test_segments_of_a_context_window_end_at_its_end_so_the_scored_tokens_keep_their_place():
    from txl.evaluation.context_ablation import segment_starts

    assert segment_starts(20, 8) == [0, 4, 12] and segment_starts(16, 8) == [0, 8] and segment_starts(3, 8) == [0]
    for length in range(1, 40):  # whatever the window, the last segment ends at its end and is whole
        starts = segment_starts(length, 8)
        assert starts[-1] == max(length - 8, 0) and starts == sorted(set(starts))


@pytest.mark.parametrize("segment", [4, 8, 32])
def test_the_curve_of_a_model_that_sees_d_tokens_steps_at_d_whatever_the_segment(segment):
    """One layer with memory 6 and range 6: each token sees exactly the 6 before it, through its segment or its
    memory. The loss on the scored tokens changes until 6 tokens of context and never after, for segments shorter
    and longer than the windows, and the bootstrap over windows keeps 6 inside its interval."""
    from types import SimpleNamespace

    from txl.evaluation.context_ablation import context_curve, effective_context, effective_context_interval

    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=1, memory="6", attn_range="6")).eval()  # sees exactly 6 back
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6)
    corpus = SimpleNamespace(splits={"valid": np.random.default_rng(0).integers(0, 23, 5000)})
    rows = context_curve(model, corpus, EvalSpec(split="valid", tgt_len=segment), [0, 2, 5, 6, 8, 16], 4, 16)
    full = rows[-1]["cut"]
    assert [r["cut"] == pytest.approx(full, abs=1e-6) for r in rows] == [False, False, False, True, True, True]
    assert effective_context(rows, tolerance=1e-6) == 6
    d, lo, hi = effective_context_interval(rows, tolerance=1e-6, score=4, resamples=200)
    assert d == 6 and lo <= d <= hi


def test_recl_refuses_curves_measured_on_different_text():
    from txl.core.errors import TxlError
    from txl.evaluation.context_ablation import recl

    a = [{"context": c, "cut_tokens": [1.0] * 8, "windows": "aaa"} for c in (0, 4)]
    b = [{"context": c, "cut_tokens": [1.0] * 8, "windows": "bbb"} for c in (0, 4)]
    with pytest.raises(TxlError, match="same windows of the same text"):
        recl({"a": a, "b": b})
