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
from txl.model.plans import apply_plans, check_model, check_run


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


def test_a_variant_registers_its_own_settings_section():
    """A variant's settings are a dataclass beside it: registered, the config reads, writes, overrides and
    domain-checks them as a section of its own, with nothing in txl/config naming them."""
    from dataclasses import dataclass

    from txl.config.domains import AT_LEAST_1, DOMAINS
    from txl.config.model import VARIANT_SETTINGS, variant_settings

    @variant_settings("toy", {"width": AT_LEAST_1})
    @dataclass
    class ToySettings:
        width: int = 3

        def validate(self, model):
            if self.width > model.d_model:
                raise ConfigError(f"model.toy.width must be at most d_model ({model.d_model}), got {self.width}")
            return self

    try:
        cfg = ModelConfig(n_layer=2)
        assert cfg.toy == ToySettings()  # every config holds each registered section, at its defaults
        assert "toy" not in to_dict(
            cfg
        )  # a new section at its defaults leaves every config's JSON (and hash) as it was
        cfg.toy.width = 7
        data = to_dict(cfg)
        assert data["toy"] == {"width": 7} and "settings" not in data  # a key of the model object, like las
        assert list(data)[-5:] == ["las", "t5", "fastrpb", "sikf", "toy"]  # in the order they registered
        assert from_dict(ModelConfig, data).toy.width == 7
        apply_overrides(cfg, ["toy.width=9"])
        assert cfg.toy.width == 9
        with pytest.raises(ConfigError, match=r"model.toy.width must be >= 1, got 0"):
            from_dict(ModelConfig, {**data, "toy": {"width": 0}}).validate()
        with pytest.raises(ConfigError, match=r"model.toy.width must be at most d_model"):
            from_dict(ModelConfig, {**data, "toy": {"width": 10_000}}).validate()
        with pytest.raises(ConfigError, match=r"unknown config key .toy.height.: toy has no field .height."):
            from_dict(ModelConfig, {**data, "toy": {"height": 1}})
        with pytest.raises(ValueError, match="registered twice"):
            variant_settings("toy")(type("Other", (), {}))
    finally:  # the registry as it was
        VARIANT_SETTINGS.pop("toy", None)
        DOMAINS.pop(ToySettings, None)


def test_variant_sections_read_before_the_variants_are_known_are_completed_by_the_checks():
    """A config loaded where no variant has registered yet keeps its sections as data; check_model builds them
    (and refuses a name no variant registers)."""
    code = (
        "import json, sys; from txl.config import load_config\n"
        "json.dump({'model': {'n_layer': 2, 'las': {'kernel': 5}, 'lass': {}}}, open(sys.argv[1], 'w'))\n"
        "run = load_config(sys.argv[1]); assert run.model.settings['las'] == {'kernel': 5}\n"
        "from txl.model.plans import check_run\n"
        "try:\n    check_run(run)\nexcept Exception as e:\n    print(e)\n"
        "del run.model.settings['lass']; check_run(run); print(run.model.las.kernel)\n"
    )
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", code, f"{tmp}/c.json"], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("unknown config key 'model.lass'") and lines[1] == "5"
