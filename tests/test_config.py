import json

import pytest

from txl.config import (
    ConfigError,
    LayerConfig,
    ModelConfig,
    RunConfig,
    apply_overrides,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from txl.plans import apply_plans, check_model, check_run


def test_defaults_are_the_enwik8_base_model():
    cfg = ModelConfig().validate()
    assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_head, cfg.d_inner, cfg.vocab_size) == (
        12,
        512,
        8,
        64,
        2048,
        256,
    )
    assert len(cfg.layers) == 12 and all(layer.mem_len == 512 for layer in cfg.layers)


def test_json_round_trip(tmp_path):
    run = RunConfig(
        model=apply_plans(ModelConfig(n_layer=4), memory="lrm=1@last:64,srm=8", attn_range="range=4@first:2")
    )
    run.model.cutoffs = [100]
    save_config(run, tmp_path / "c.json")
    back = load_config(tmp_path / "c.json")
    assert to_dict(back) == to_dict(run)
    assert back.model.layers[3].mem_len == 64 and back.model.layers[0].attn_range == 4


def test_unknown_key_in_file_names_the_field(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"n_layer": 2, "layerz": []}}))
    with pytest.raises(ConfigError, match=r"unknown config key 'model.layerz'.*known: vocab_size"):
        load_config(path)


def test_wrong_type_in_file_names_the_field():
    with pytest.raises(ConfigError, match=r"model.layers.1.mem_len: expected int, got \"long\""):
        from_dict(RunConfig, {"model": {"n_layer": 2, "layers": [{"mem_len": 4}, {"mem_len": "long"}]}})


def test_broken_json_is_one_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "not valid JSON" in str(err.value) and "\n" not in str(err.value)


def test_overrides_are_checked_against_field_types():
    run = RunConfig()
    apply_overrides(
        run,
        [
            "model.layers.3.mem_len=1024",
            "model.layers.3.attn_range=none",
            "model.dropout=0",
            "model.clamp_len=820",
            "model.same_length=true",
            "model.cutoffs=[100,200]",
            "model.las.alphas=0.1,0.2,0,0,0,0,0,0",
        ],
    )
    m = run.model
    assert m.layers[3].mem_len == 1024 and m.layers[3].attn_range is None
    assert m.dropout == 0.0 and isinstance(m.dropout, float)
    assert m.clamp_len == 820 and m.same_length is True and m.cutoffs == [100, 200]
    assert m.las.alphas == [0.1, 0.2, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("model.layers.3.mem_len=abc", r"model.layers.3.mem_len: expected int, got 'abc'"),
        ("model.layers.3.mem_len=1.5", r"model.layers.3.mem_len: expected int"),
        ("model.layers.30.mem_len=5", r"model.layers.30: no such entry; model.layers has 12 entries"),
        ("model.layerz=5", r"unknown config key 'model.layerz': model has no field 'layerz'"),
        ("model.attn_impl=turbo", r"model.attn_impl: expected one of 'auto', 'plain', 'sdpa', 'flex'"),
        ("model.dropout", r"must look like section.field=value"),
        ("model.d_model.x=1", r"model.d_model.x: model.d_model is a value, not a section"),
    ],
)
def test_bad_overrides_name_the_field(assignment, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), [assignment])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(n_layer=4), r"model.layers has 12 entries but model.n_layer is 4"),
        (dict(cutoffs=[100, 50]), r"model.cutoffs must increase strictly"),
        (dict(cutoffs=[300]), r"model.cutoffs must increase strictly and stay below model.vocab_size \(256\)"),
        (dict(dropout=1.5), r"model.dropout must be in \[0, 1\)"),
        (dict(d_model=513), r"model.d_model must be even"),
        (dict(n_head=0), r"model.n_head must be >= 1"),
        (dict(tie_projs=[True]), None),
        (dict(cutoffs=[100], tie_projs=[True]), r"model.tie_projs needs one flag per cluster \(2\)"),
        (dict(cutoffs=[100, 200], div_val=1024), r"model.div_val=1024 leaves cluster 1 with no embedding width"),
    ],
)
def test_invalid_combinations_name_the_fields(change, message):
    cfg = ModelConfig()
    cfg.__dict__.update(change)
    if message is None:
        cfg.validate()
        return
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_layer_errors_name_the_layer():
    cfg = ModelConfig()
    cfg.layers[5] = LayerConfig(mem_len=-3)
    with pytest.raises(ConfigError, match=r"model.layers.5.mem_len must be >= 0, got -3"):
        check_model(cfg)
    cfg.layers[5] = LayerConfig(attn="nope")
    with pytest.raises(ConfigError, match=r"model.layers.5.attn: unknown attention variant 'nope' \(known: xl"):
        check_model(cfg)


def test_evaluation_plans_are_checked_at_config_time():
    run = RunConfig()
    run.eval.memory = "lrm=30@interleave:2304,srm=128"
    with pytest.raises(
        ConfigError, match=r"eval.memory: memory plan .* places 30 layers at 'interleave' but the model has 12"
    ):
        check_run(run)
    run.eval.memory, run.eval.attn_range = "2100", "range=128@middle:2"
    with pytest.raises(ConfigError, match=r"eval.attn_range: range plan .* unknown placement 'middle'"):
        check_run(run)
