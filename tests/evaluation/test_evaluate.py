"""txl.evaluation.evaluate: what an evaluation is (EvalSpec), what it measures (EvalResult), and evaluating under a
plan."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config

from txl.config import DataConfig, EvalConfig, RunConfig, SyntheticConfig, TrainConfig, to_dict
from txl.core.errors import TxlError
from txl.data import load_corpus
from txl.evaluation.evaluate import EvalResult, EvalSpec, check_flags, evaluate, evaluate_plans
from txl.evaluation.protocols import get_protocol
from txl.model.plans import KEEP, MemoryPlan
from txl.model.transformer import TransformerXL
from txl.train import checkpoint as ckpt
from txl.train.runs import load_trained


def _run(**eval_fields) -> RunConfig:
    return RunConfig(
        model=tiny_config(n_layer=2, memory="8"),
        train=TrainConfig(tgt_len=12, precision="fp32"),
        eval=EvalConfig(**eval_fields),
    )


# --------------------------------------------------------------------------- which setting wins


def test_the_segment_length_comes_from_training_when_the_eval_section_names_none():
    spec = EvalSpec.for_run(_run(), torch.device("cpu"))
    assert (spec.split, spec.tgt_len, spec.batch_size, spec.max_segments, spec.precision) == (
        "valid",
        12,
        10,
        None,
        "fp32",
    )
    assert spec.plan.layers == {} and spec.plan.same_length is None and spec.plan.clamp_len == KEEP


def test_the_eval_section_wins_over_training_and_flags_win_over_both():
    run = _run(tgt_len=6, batch_size=3, max_segments=5, memory="4", clamp_len=7, same_length=True)
    spec = EvalSpec.for_run(run, torch.device("cpu"))
    assert (spec.tgt_len, spec.batch_size, spec.max_segments) == (6, 3, 5)
    assert spec.plan.mem_lens == [4, 4] and spec.plan.clamp_len == 7 and spec.plan.same_length is True
    spec = EvalSpec.for_run(run, torch.device("cpu"), tgt_len=9, max_segments=2, memory="2,3", same_length=False)
    assert (spec.tgt_len, spec.batch_size, spec.max_segments) == (9, 3, 2)
    assert spec.plan.mem_lens == [2, 3] and spec.plan.same_length is False and spec.memory == "2,3"


def test_a_protocol_wins_over_the_run_and_flags_win_over_the_protocol():
    run = _run(tgt_len=6, batch_size=3, memory="4")
    proto = get_protocol("wt103-base")
    spec = EvalSpec.for_run(run, None, "wt103-base")
    assert spec.protocol is proto and (spec.split, spec.tgt_len, spec.batch_size) == ("test", proto.tgt_len, 10)
    assert spec.plan.mem_lens == [proto.mem_len] * 2 and spec.plan.clamp_len == proto.clamp_len
    spec = EvalSpec.for_run(run, None, "wt103-base", split="valid", tgt_len=5, clamp_len=0)
    assert (spec.split, spec.tgt_len, spec.plan.clamp_len) == ("valid", 5, 0)


def test_whole_split_ignores_the_runs_segment_cap_unless_a_flag_gives_one():
    run = _run(max_segments=5)
    assert EvalSpec.for_run(run, whole_split=True).max_segments is None
    assert EvalSpec.for_run(run, whole_split=True, max_segments=3).max_segments == 3
    assert EvalSpec.for_run(run).max_segments == 5


def test_without_a_device_the_precision_is_left_as_named():
    run = _run()
    run.train.precision = "fp16"  # refused on a CPU, but a plan or a budget needs no device
    assert EvalSpec.for_run(run).precision == "fp16"
    with pytest.raises(TxlError, match="needs a GPU"):
        EvalSpec.for_run(run, torch.device("cpu"))


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"tgt_len": 0}, "--tgt-len must be >= 1, got 0"),
        ({"batch_size": -3}, "--batch-size must be >= 1, got -3"),
        ({"max_segments": 0}, "--max-segments must be >= 1, got 0"),
        ({"clamp_len": -1}, "--clamp-len must be >= 0, got -1"),
    ],
)
def test_flags_are_checked_against_the_configs_own_domains(flags, message):
    with pytest.raises(TxlError) as e:
        check_flags(flags)
    assert str(e.value) == message
    with pytest.raises(TxlError) as e:
        EvalSpec.for_run(_run(), **flags)
    assert str(e.value) == message


def test_an_unknown_setting_is_refused():
    with pytest.raises(TypeError, match="segment_length"):
        EvalSpec.for_run(_run(), segment_length=3)


def test_plans_keep_the_evaluation_settings_and_are_named_by_their_memory():
    spec = EvalSpec.for_run(_run(memory="4", attn_range="6", clamp_len=7), None)
    own, other = spec.plans(None) + spec.plans(["1,2"])
    assert own.name == "4" and own.mem_lens == [4, 4] and own.attn_ranges == [6, 6] and own.clamp_len == 7
    assert other.name == "1,2" and other.mem_lens == [1, 2] and other.attn_ranges == [6, 6] and other.clamp_len == 7
    assert EvalSpec.for_run(_run(), None).plans()[0].name == "as trained"


# --------------------------------------------------------------------------- what an evaluation measures


@pytest.fixture(scope="module")
def copy_corpus():
    data = DataConfig(corpus="copy", synthetic=SyntheticConfig(lags=[4], train_tokens=2000, eval_tokens=1200))
    return load_corpus(data, progress=False)


def test_a_result_is_typed_and_its_plain_form_keeps_the_old_keys(copy_corpus):
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=2, memory="6", vocab_size=copy_corpus.vocab_size)).eval()
    spec = EvalSpec(split="valid", tgt_len=8, batch_size=4, max_segments=5)
    out = evaluate(model, copy_corpus, spec)
    assert isinstance(out, EvalResult) and out.segments == 5 and out.tgt_len == 8
    assert 0 < out.tokens < 5 * 4 * 8  # the copy task scores its answers alone
    assert out.accuracy is not None and 0.0 <= out.accuracy <= 1.0 and out.value("accuracy") == out.accuracy
    d = out.to_dict()
    assert list(d)[:2] == ["loss", "bits_per_token"] and d["loss"] == out.loss
    assert d["bits_per_token"] == pytest.approx(out.loss / math.log(2))
    assert set(d) >= {"split", "tokens", "segments", "tgt_len", "loss_by_position", "blocks", "accuracy"}
    assert "loss_by_position" not in out.scalars() and out.scalars()["tokens"] == out.tokens
    assert sum(out.blocks["tokens"]) == out.tokens


def test_evaluating_under_a_plan_never_changes_the_models_own_config(copy_corpus):
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=2, memory="6", vocab_size=copy_corpus.vocab_size)).eval()
    own, own_layers = model.cfg, [layer for layer in model.cfg.layers]
    before = to_dict(own)
    spec = EvalSpec(split="valid", tgt_len=8, batch_size=4, max_segments=3)
    plans = [MemoryPlan.of_lists("short", [0, 2], [None, 3], True, 4), MemoryPlan.of_lists("long", [12, 12])]
    results = evaluate_plans(model, copy_corpus, spec, plans)
    assert model.cfg is own and to_dict(own) == before and all(a is b for a, b in zip(own_layers, own.layers))
    assert all(block.attn.layer is layer for block, layer in zip(model.layers, own.layers))
    assert [r.plan for r in results] == ["short", "long"]
    assert [r.budget["cached_positions"] for r in results] == [2, 24]
    with model.memory_plan(plans[0]):  # inside the block, the model runs the planned copy
        assert model.cfg is not own and model.cfg.mem_lens == [0, 2] and model.cfg.same_length is True
        assert model.layers[1].attn.layer.attn_range == 3 and own.layers[1].attn_range is None
    assert model.cfg is own
    assert evaluate(model, copy_corpus, spec, plans[0]).loss == results[0].loss  # the same plan, the same numbers


def test_a_bad_plan_is_refused_before_anything_changes():
    model = TransformerXL(tiny_config(n_layer=2, memory="6"))
    own = model.cfg
    with pytest.raises(TxlError, match="memory plan has 3 values but the model has 2 layers"):
        with model.memory_plan(mem_lens=[1, 2, 3]):
            pass
    assert model.cfg is own and own.mem_lens == [6, 6]


def test_a_float64_checkpoint_is_evaluated_in_float64(tmp_path, copy_corpus):
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=2, memory="6", vocab_size=copy_corpus.vocab_size)
    model = TransformerXL(cfg).double()
    run = RunConfig(model=cfg, data=DataConfig(corpus="copy"), train=TrainConfig(tgt_len=8))
    ckpt.save_checkpoint(tmp_path / "checkpoints", 1, model, {}, to_dict(run), {"step": 1})
    trained = load_trained(tmp_path, "cpu")
    assert trained.model.dtype == torch.float64 and trained.root == tmp_path
    assert all(torch.equal(a, b) for a, b in zip(trained.model.state_dict().values(), model.state_dict().values()))
    spec = EvalSpec(split="valid", tgt_len=8, batch_size=4, max_segments=3)
    assert evaluate(trained.model, copy_corpus, spec).loss == evaluate(model.eval(), copy_corpus, spec).loss
