"""Importing and exporting weights in the original and transformers layouts."""

import json

import pytest
import torch
from safetensors.torch import save_file

from txl.cli import main
from txl.config import ModelConfig
from txl.core.errors import TxlError
from txl.interop.convert import export_state, import_state, read_state_dict
from txl.model.plans import apply_plans
from txl.model.transformer import TransformerXL


def model_of(seed=0, **fields) -> TransformerXL:
    torch.manual_seed(seed)
    base = dict(vocab_size=50, n_layer=2, d_model=16, n_head=2, d_head=8, d_inner=32, dropout=0.0)
    base.update(fields)
    return TransformerXL(apply_plans(ModelConfig(**base), memory="8")).eval()


CONFIGS = {
    "plain": dict(),
    "adaptive-div2": dict(cutoffs=[10, 30], div_val=2),
    "adaptive-div1-proj": dict(cutoffs=[10, 30], div_val=1, d_embed=8),
    "untied-r-pre-ln": dict(untie_r=True, pre_lnorm=True),
    "partly-tied": dict(cutoffs=[10], div_val=2, tie_projs=[True, False], tie_weight=False),
}


def logits(model, tokens):
    out, mems = model(tokens[:, :6])
    out2, _ = model(tokens[:, 6:], mems)
    return torch.cat([out, out2], 1)


@pytest.mark.parametrize("layout", ["original", "transformers"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_then_import_gives_identical_logits(layout, name):
    model = model_of(**CONFIGS[name])
    with torch.no_grad():  # make tied and untied parts distinguishable
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tensors, config = export_state(model, layout)
    back = import_state(tensors, layout, config)
    assert back.cfg.cutoffs == model.cfg.cutoffs and back.cfg.untie_r == model.cfg.untie_r
    assert back.cfg.pre_lnorm == model.cfg.pre_lnorm and back.cfg.tie_weight == model.cfg.tie_weight
    tokens = torch.randint(0, 50, (2, 12))
    assert torch.equal(logits(back, tokens), logits(model, tokens))


def original_names(untie_r: bool, prefix: str = "", shared_copies: bool = False) -> dict[str, tuple]:
    """Tensor names and shapes of MemTransformerLM / TransfoXLLMHeadModel for n_token=50, n_layer=2, n_head=2,
    d_model=16, d_head=8, d_inner=32, d_embed=16, div_val=2, cutoffs=[10, 30], tie_weight, tie_projs=[F, T, T].

    Written from the parameter definitions: AdaptiveEmbedding (emb_layers, emb_projs), PositionalEmbedding
    (inv_freq buffer), r_w_bias/r_r_bias (model-wide, or per layer with untie_r),
    RelPartialLearnableMultiHeadAttn (qkv_net, o_net, layer_norm, r_net), PositionwiseFF (CoreNet.0,
    CoreNet.3, layer_norm), ProjectedAdaptiveLogSoftmax (cluster_weight, cluster_bias, out_layers, out_projs).
    """
    names = {
        f"{prefix}word_emb.emb_layers.0.weight": (10, 16),
        f"{prefix}word_emb.emb_layers.1.weight": (20, 8),
        f"{prefix}word_emb.emb_layers.2.weight": (20, 4),
        f"{prefix}word_emb.emb_projs.0": (16, 16),
        f"{prefix}word_emb.emb_projs.1": (16, 8),
        f"{prefix}word_emb.emb_projs.2": (16, 4),
        f"{prefix}pos_emb.inv_freq": (8,),
        "crit.cluster_weight": (2, 16),
        "crit.cluster_bias": (2,),
        "crit.out_layers.0.weight": (10, 16),
        "crit.out_layers.0.bias": (10,),
        "crit.out_layers.1.weight": (20, 8),
        "crit.out_layers.1.bias": (20,),
        "crit.out_layers.2.weight": (20, 4),
        "crit.out_layers.2.bias": (20,),
        "crit.out_projs.0": (16, 16),
        "crit.out_projs.1": (16, 8),
        "crit.out_projs.2": (16, 4),
    }
    if not untie_r:
        names[f"{prefix}r_w_bias"] = names[f"{prefix}r_r_bias"] = (2, 8)
    for i in range(2):
        layer = f"{prefix}layers.{i}."
        names.update(
            {
                layer + "dec_attn.qkv_net.weight": (48, 16),
                layer + "dec_attn.o_net.weight": (16, 16),
                layer + "dec_attn.layer_norm.weight": (16,),
                layer + "dec_attn.layer_norm.bias": (16,),
                layer + "dec_attn.r_net.weight": (16, 16),
                layer + "pos_ff.CoreNet.0.weight": (32, 16),
                layer + "pos_ff.CoreNet.0.bias": (32,),
                layer + "pos_ff.CoreNet.3.weight": (16, 32),
                layer + "pos_ff.CoreNet.3.bias": (16,),
                layer + "pos_ff.layer_norm.weight": (16,),
                layer + "pos_ff.layer_norm.bias": (16,),
            }
        )
        if untie_r or shared_copies:
            names[layer + "dec_attn.r_w_bias"] = names[layer + "dec_attn.r_r_bias"] = (2, 8)
    return names


LAYOUT_NAMES = {
    ("original", False): original_names(False),
    ("transformers", False): original_names(False, "transformer.", shared_copies=True),
    ("transformers", True): original_names(True, "transformer."),
}


@pytest.mark.parametrize("layout, untie_r", list(LAYOUT_NAMES))
def test_a_state_dict_with_the_sources_names_loads_and_runs(layout, untie_r):
    expected = LAYOUT_NAMES[(layout, untie_r)]
    torch.manual_seed(1)
    tensors = {name: torch.randn(shape) * 0.05 for name, shape in expected.items()}
    prefix = "transformer." if layout == "transformers" else ""
    tensors[f"{prefix}pos_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0.0, 16, 2.0) / 16))
    for i in (1, 2):  # tied projections: the same tensor under both names, as a state_dict has them
        tensors[f"crit.out_projs.{i}"] = tensors[f"{prefix}word_emb.emb_projs.{i}"]
    for i in range(3):
        tensors[f"crit.out_layers.{i}.weight"] = tensors[f"{prefix}word_emb.emb_layers.{i}.weight"]
    if layout == "transformers" and not untie_r:
        for i in range(2):
            tensors[f"{prefix}layers.{i}.dec_attn.r_w_bias"] = tensors[f"{prefix}r_w_bias"]
            tensors[f"{prefix}layers.{i}.dec_attn.r_r_bias"] = tensors[f"{prefix}r_r_bias"]
    model = import_state(tensors, layout, {"tie_projs": [False]})  # the original's one-flag default: the tensors decide
    cfg = model.cfg
    assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_head, cfg.d_inner, cfg.vocab_size) == (2, 16, 2, 8, 32, 50)
    assert cfg.cutoffs == [10, 30] and cfg.div_val == 2 and cfg.untie_r == untie_r
    assert cfg.resolved_tie_projs() == [False, True, True] and cfg.tie_weight
    out, _ = model(torch.randint(0, 50, (2, 5)))
    assert torch.isfinite(out).all()
    # and txl writes exactly those names back
    exported, _ = export_state(model, layout)
    assert {k: tuple(v.shape) for k, v in exported.items()} == expected


def test_published_checkpoint_without_tied_tensors_imports():
    """The transformers checkpoint omits tied output weights and projections; they come from the embedding."""
    model = model_of(cutoffs=[10, 30], div_val=2, untie_r=True)
    tensors, config = export_state(model, "transformers")
    for i in range(3):
        del tensors[f"crit.out_layers.{i}.weight"]
    del tensors["crit.out_projs.1"], tensors["crit.out_projs.2"]
    back = import_state(tensors, "transformers", config)
    tokens = torch.randint(0, 50, (1, 12))
    assert torch.equal(logits(back, tokens), logits(model, tokens))


def test_cutoffs_that_shapes_cannot_tell_must_be_given():
    tensors, _ = export_state(model_of(cutoffs=[10, 30], div_val=1), "original")
    with pytest.raises(TxlError, match="cannot be read from the tensors: give them with --cutoffs"):
        import_state(tensors, "original")
    assert import_state(tensors, "original", {"cutoffs": [10, 30]}).cfg.cutoffs == [10, 30]


def _write(tensors, path):
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(path))
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda t: t.pop("layers.1.pos_ff.CoreNet.3.bias"), "1 tensors are missing: layers.1.pos_ff.CoreNet.3.bias"),
        (
            lambda t: t.update({"layers.0.dec_attn.mystery": torch.zeros(3)}),
            "have no place in the model: layers.0.dec_attn.mystery",
        ),
        (
            lambda t: t.update({"layers.1.pos_ff.CoreNet.0.weight": torch.zeros(31, 16)}),
            "has shape (31, 16), the inferred model expects (32, 16)",
        ),
        (lambda t: t.update({"pos_emb.inv_freq": torch.ones(8)}), "is not the standard sinusoid"),
    ],
)
def test_bad_state_dicts_are_one_line_errors_with_exit_code_2(damage, message, tmp_path, capsys):
    tensors, _ = export_state(model_of(), "original")
    damage(tensors)
    src = _write(tensors, tmp_path / "bad.safetensors")
    assert main(["import", str(src), "--from", "original", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_pickled_models_are_refused(tmp_path, capsys):
    torch.save(model_of(), tmp_path / "whole.pt")  # a whole module, not a state dict
    assert main(["import", str(tmp_path / "whole.pt"), "--from", "original", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "holds pickled Python objects" in err and "state_dict()" in err and err.count("\n") == 1
    with pytest.raises(TxlError, match="does not exist"):
        read_state_dict(tmp_path / "nothing.bin")


def _exported_source(folder, vocab_size: int, n_layer: int, memory: str) -> None:
    """A model written in the transformers layout, weights and config.json, as a source to import."""
    torch.manual_seed(0)
    fields = dict(vocab_size=vocab_size, n_layer=n_layer, d_model=16, n_head=2, d_head=8, d_inner=32)
    exported, config = export_state(
        TransformerXL(apply_plans(ModelConfig(**fields), memory=memory)).eval(), "transformers"
    )
    folder.mkdir()
    _write(exported, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))


def test_import_then_eval_under_two_plans(tmp_path, capsys):
    """The README workflow: import a model, then evaluate it with its memory cut, in one command."""
    _exported_source(tmp_path / "src", vocab_size=256, n_layer=3, memory="32")
    assert (
        main(
            [
                "import",
                str(tmp_path / "src" / "model.safetensors"),
                "--from",
                "transformers",
                "--config",
                str(tmp_path / "src" / "config.json"),
                "--out",
                str(tmp_path / "imported"),
                "--corpus",
                "pystdlib",
                "--tokenizer",
                "bytes",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                str(tmp_path / "imported"),
                "--memory",
                "32",
                "--memory",
                "lrm=1@last:32,srm=4",
                "--tgt-len",
                "16",
                "--max-segments",
                "3",
                "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["cached_positions"] for r in results] == [96, 40]
    assert all(r["bpb"] > 0 for r in results) and results[0]["loss"] != results[1]["loss"]


@pytest.mark.slow
def test_export_command_writes_both_layouts(tmp_path, capsys):
    from txl.train.loop import Trainer
    from txl.train.presets import get_preset

    run = get_preset("tiny")
    run.train.steps = 2
    run.data.root = str(tmp_path / "data")
    Trainer(run, tmp_path / "run", progress=False).fit()
    for layout in ("original", "transformers"):
        assert main(["export", str(tmp_path / "run"), "--to", layout, "--out", str(tmp_path / layout)]) == 0
        back = read_state_dict(tmp_path / layout / "model.safetensors")
        config = json.loads((tmp_path / layout / "config.json").read_text())
        model = import_state(back, layout, config)
        assert model.cfg.n_layer == 2
    assert (
        main(["export", str(tmp_path / "run"), "--to", "original", "--out", str(tmp_path / "bin"), "--format", "bin"])
        == 0
    )
    assert len(read_state_dict(tmp_path / "bin" / "pytorch_model.bin")) > 10


@pytest.mark.parametrize(
    "fields, plans, message",
    [
        (dict(), dict(memory="8,4"), "gives layers different lengths"),
        (dict(), dict(attn_range="range=4@first:1,inf"), "limit their attention range"),
        (dict(same_length=True), dict(), "same_length under txl's tf rule"),
        (dict(), dict(memory_dtype="int8"), "store their memory quantized"),
    ],
)
def test_export_refuses_in_one_line_what_the_layout_cannot_run(fields, plans, message, tmp_path, capsys):
    model = model_of(**fields)
    model = TransformerXL(apply_plans(model.cfg, **plans)).eval()
    for layout in ("original", "transformers"):
        with pytest.raises(TxlError, match=message):
            export_state(model, layout)
    from conftest import tiny_run

    from txl.train.loop import Trainer
    from txl.train.runs import load_trained  # and the command says so in one line, writing nothing

    if fields:  # a trained run with tf same_length: refused, then exported under the pt rule with --set
        run = tiny_run(tmp_path, **{"train.steps": 1, "model.same_length": "true"})
        Trainer(run, tmp_path / "run", progress=False).fit()
        capsys.readouterr()
        assert main(["export", str(tmp_path / "run"), "--to", "original", "--out", str(tmp_path / "a")]) == 2
        assert "same_length under txl's tf rule" in capsys.readouterr().err and not (tmp_path / "a").exists()
        argv = ["export", str(tmp_path / "run"), "--to", "original", "--out", str(tmp_path / "b")]
        assert main([*argv, "--set", "model.same_length_rule=pt"]) == 0
        assert json.loads((tmp_path / "b" / "config.json").read_text())["txl_same_length_rule"] == "pt"
        assert load_trained(tmp_path / "run").model.cfg.same_length_rule == "tf"  # the run itself is unchanged


def test_an_imported_model_evaluated_without_its_text_says_to_give_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TXL_DATA", str(tmp_path / "data"))  # the built-in corpus's cache, away from here
    _exported_source(tmp_path / "src", vocab_size=84, n_layer=2, memory="8")
    argv = ["import", str(tmp_path / "src" / "model.safetensors"), "--from", "transformers"]
    assert main([*argv, "--config", str(tmp_path / "src" / "config.json"), "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "the model 84: it was made for other text; give the text it reads with --corpus" in err


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"mem_len": "abc"}, "mem_len must be a whole number"),
        ({"mem_len": [1, 2]}, "mem_len must be a whole number"),
        ({"cutoffs": "abc"}, "cutoffs must be a list"),
        ({"cutoffs": [10, "x"]}, "cutoffs must be a list"),
        ({"same_length": "maybe"}, "same_length must be true or false"),
        ({"n_head": True}, "n_head must be a whole number"),
    ],
)
def test_a_source_config_of_the_wrong_types_is_one_line(bad, message):
    from txl.interop.checks import check_hints

    with pytest.raises(TxlError, match=message):
        check_hints({"mem_len": 8, **bad})
    with pytest.raises(TxlError, match="must be a JSON object"):
        check_hints([1, 2])
    assert check_hints({"mem_len": 8.0, "cutoffs": [10, 30], "tie_projs": [False, True], "dropout": 0.1})


def test_a_vector_where_a_matrix_belongs_is_one_line():
    model = model_of()
    tensors, config = export_state(model, "original")
    tensors["layers.0.dec_attn.qkv_net.weight"] = tensors["layers.0.dec_attn.qkv_net.weight"].flatten()
    with pytest.raises(TxlError, match="qkv_net.weight has shape .* where a Transformer-XL holds a matrix"):
        import_state(tensors, "original", config)
