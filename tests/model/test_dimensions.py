"""The registry of memory dimensions: one dimension registered in one place reaches every command that takes plans,
an evaluation variant's identity, the budget and report columns, the plan search's flags, and export refusal."""

from __future__ import annotations

import pytest
from conftest import result_rows, tiny_config

from txl.cli import main
from txl.config import to_dict
from txl.interop.checks import InteropError, refuse_lossy
from txl.model.budget import budget, budgets_text
from txl.model.dimensions import DIMENSIONS, Dimension, register_dimension, unregister_dimension
from txl.model.plans import apply_plans, describe
from txl.plan.language import PlanKind
from txl.study.registry import Experiment, Variant
from txl.study.report import build_report
from txl.study.sweep import Job, job_identity

STRIDE = PlanKind("stride", ("stride",), int, str, 1)  # a made-up family: keep every k-th evicted state


@pytest.fixture
def stride():
    dim = Dimension(
        STRIDE, "stride", "strided", "every k-th evicted state kept, e.g. 'stride=2@last:1,1'", grid="stride-grid"
    )
    yield register_dimension("stride", dim)
    unregister_dimension("stride")


def test_a_registered_dimension_is_a_flag_of_every_command_that_takes_plans(stride, capsys):
    for command, flag in (
        ("train", "--stride"),
        ("eval", "--stride"),
        ("budget", "--stride"),
        ("plan", "--stride-grid"),
    ):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert flag in capsys.readouterr().out, command
    assert main(["budget", "--layers", "2", "--d-model", "16", "--memory", "8", "--stride", "stride=2@last:1,1"]) == 0
    out = capsys.readouterr().out
    assert "strided 1x1,1x2" in out  # the summary's word and the plan as the language writes it (and a column)
    with pytest.raises(SystemExit):
        main(["budget", "--memory", "8", "--stride", "2", "--stride", "3"])  # given once, as every plan flag


def test_its_values_live_in_the_layer_config_and_leave_other_configs_as_they_were(stride):
    plain = tiny_config()
    assert "extra" not in str(to_dict(plain))  # no config hash of an earlier result moves
    cfg = apply_plans(plain, stride="stride=2@last:1,1")
    assert [layer.extra for layer in cfg.layers] == [{}, {"stride": 2}]
    assert describe(cfg)["stride"] == "1x1,1x2" and "stride" not in describe(plain)
    assert "extra" not in to_dict(cfg)["layers"][0] and to_dict(cfg)["layers"][1]["extra"] == {"stride": 2}


def test_an_evaluation_variant_names_it_in_its_identity_only_when_set(stride, tmp_path):
    from conftest import tiny_run

    exp = Experiment("tiny", tiny_run(tmp_path), [Variant("long"), Variant("cut", of="long", plan={"stride": "2"})])
    exp.name = "t/stride"
    cut = job_identity(exp, Job(exp.variants[1], 0))
    assert cut["eval"]["stride"] == "2"
    plain = Experiment("tiny", exp.base, [Variant("long"), Variant("cut", of="long")])
    plain.name = "t/stride"
    assert "stride" not in job_identity(plain, Job(plain.variants[1], 0))["eval"]  # older identities keep their keys
    from txl.evaluation.evaluate import EvalSpec

    spec = EvalSpec.for_run(exp.base, stride="2")  # txl eval --stride 2
    assert spec.plans()[0].name == "as trained, strided 2" and spec.plan.layers["stride"] == (2, 2)


def test_budget_and_report_columns_and_both_export_layouts_refuse_it(stride, tmp_path):
    cfg = apply_plans(tiny_config(), stride="stride=2@last:1,1")
    text = budgets_text([budget(cfg, 8), budget(tiny_config(), 8)])
    assert text.count("strided") >= 3  # the layer table, the summary and the comparison
    rows = [
        {"variant": v, "seed": 0, "kind": "train", "plan": describe(c), "metrics": {"bpb": 2.0 + i}}
        for i, (v, c) in enumerate((("plain", tiny_config()), ("strided", cfg)))
    ]
    report = build_report(result_rows(*rows), "t", tmp_path, plot=False)
    header = report["table"].splitlines()[0]
    assert "strided" in header and "1x1,1x2" in report["table"]
    for layout in ("original", "transformers"):
        with pytest.raises(InteropError, match=r"layers \[1\] set strided \(extra.stride\)"):
            refuse_lossy(cfg, layout)
        refuse_lossy(apply_plans(tiny_config(), memory="8"), layout)  # the plain model still exports


def test_a_name_or_flag_is_registered_once():
    with pytest.raises(ValueError, match="registered already"):
        register_dimension("sinks2", DIMENSIONS["sinks"])


def test_a_registration_that_would_clash_or_half_work_is_refused():
    kind = PlanKind("x", ("x",), int, str, 0)
    cases = [
        (Dimension(kind, "x1", "x", "h", cli="--sinks"), "is taken"),  # another dimension's flag
        (Dimension(kind, "x2", "x", "h", cli="--memory"), "is taken"),  # a command's own flag
        (Dimension(kind, "x3", "x", "h", get=lambda layer: 0), "both get and set"),
        (Dimension(kind, "x4", "x", "h", keep=lambda v, e, k: k), "both keep and positions"),
    ]
    for dim, message in cases:
        with pytest.raises(ValueError, match=message):
            register_dimension(dim.flag, dim)
        assert dim.flag not in DIMENSIONS
    with pytest.raises(ValueError, match="_scale"):
        register_dimension("x_scale", Dimension(kind, "x5", "x", "h"))
