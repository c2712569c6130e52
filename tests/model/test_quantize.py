"""txl.model.quantize: per-layer memory dtypes, their round-trip bounds, and bytes that the budget counts exactly."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_fast_path_matches_plain, cache_bytes, run_segments, tiny_config

from txl.cli import main
from txl.config import ConfigError, from_dict, to_dict
from txl.config.model import ModelConfig
from txl.model.budget import budget
from txl.model.plans import MemoryPlan, apply_plans, check_model, describe
from txl.model.quantize import BITS, MEMORY_DTYPES, SCALED, dequantize, quantize, stored_bytes
from txl.model.transformer import TransformerXL

# the documented bound on |dequantize(quantize(x)) - x|, from x and its position's scale s = max|x| / levels
BOUNDS = {
    "fp32": lambda x, m: torch.zeros_like(x),
    "bf16": lambda x, m: x.abs() * 2**-8,
    "fp16": lambda x, m: x.abs() * 2**-11,
    "fp8": lambda x, m: x.abs() * 2**-4 + (m / 448) * 2**-10,
    "int8": lambda x, m: (m / 127) / 2,
    "int4": lambda x, m: (m / 7) / 2,
}


@pytest.mark.parametrize("dtype", MEMORY_DTYPES)
def test_each_dtype_round_trips_within_its_documented_bound(dtype):
    torch.manual_seed(0)
    # positions of very different sizes: the scale is per position
    x = torch.randn(3, 7, 32) * torch.logspace(-3, 3, 7).view(1, 7, 1)
    back = dequantize(quantize(x, dtype), torch.float32)
    largest = x.abs().amax(-1, keepdim=True)
    assert back.shape == x.shape and back.dtype == torch.float32
    assert ((back - x).abs() <= BOUNDS[dtype](x, largest) * (1 + 1e-6) + 1e-30).all()
    if dtype != "fp32":
        assert not torch.equal(back, x)  # something was rounded: the bound is not met by doing nothing


@pytest.mark.parametrize("dtype", MEMORY_DTYPES)
def test_stored_tensors_take_exactly_the_bytes_the_budget_counts(dtype):
    x = torch.randn(2, 9, 16)
    stored = quantize(x, dtype)
    held = sum(t.numel() * t.element_size() for t in stored.values())
    assert held == 2 * stored_bytes(dtype, 9, 16)
    assert set(stored) == ({"h", "h_scale"} if dtype in SCALED else {"h"})
    if dtype != "fp32":  # fresh tensors of their own size: the bytes are really saved
        assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in stored.values())


def test_a_models_cache_holds_what_its_budget_says_for_every_dtype():
    torch.manual_seed(0)
    for dtype in MEMORY_DTYPES:
        cfg = apply_plans(tiny_config(n_layer=2, memory="5"), memory_dtype=f"dtype={dtype}@first:1,int8")
        model = TransformerXL(cfg).eval()
        with torch.no_grad():
            _, mems = model(torch.randint(0, 23, (3, 4)))
            _, mems = model(torch.randint(0, 23, (3, 4)), mems)  # a full memory: 5 of the 8 positions seen
        held = cache_bytes(mems)
        assert held == budget(cfg, 4, batch=3).bytes, dtype
        assert mems[0].recent.values.shape[1] == 5


def test_fp32_memory_is_todays_model_bit_for_bit():
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=3, memory="6")
    model = TransformerXL(cfg).eval()
    tokens = torch.randint(0, 23, (2, 24))
    plain = run_segments(model, tokens, 5)
    with model.memory_plan(MemoryPlan.parse(3, memory_dtype="fp32")):
        assert torch.equal(run_segments(model, tokens, 5), plain)
    with model.memory_plan(MemoryPlan.parse(3, memory_dtype="int4")):
        coarse = run_segments(model, tokens, 5)
    assert torch.equal(coarse[:, :5], plain[:, :5])  # the first segment has no memory to round
    assert not torch.equal(coarse, plain)


@pytest.mark.parametrize("impl", ["sdpa", "flex"])
def test_every_attention_path_reads_the_same_dequantized_memory(impl):
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=2, memory="6", memory_dtype="int8", attn_range="range=4@first:1")
    assert_fast_path_matches_plain(cfg, impl)


def test_training_through_a_quantized_memory_sends_gradients_to_the_weights_alone():
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=2, memory="4", memory_dtype="fp8"))
    loss, mems = model(torch.randint(0, 23, (2, 4)), None, torch.randint(0, 23, (2, 4)))
    loss, mems = model(torch.randint(0, 23, (2, 4)), mems, torch.randint(0, 23, (2, 4)))
    loss.mean().backward()
    assert all(not t.requires_grad for state in mems for t in state.to_dict().values())
    assert mems[0].recent.values.dtype == torch.float8_e4m3fn and model.layers[0].attn.qkv.weight.grad is not None


def test_the_plan_language_carries_memory_dtypes_and_old_configs_keep_their_form():
    cfg = apply_plans(tiny_config(n_layer=4), memory_dtype="dtype=int4@last:1,bf16")
    assert [layer.mem_dtype for layer in cfg.layers] == ["bf16", "bf16", "bf16", "int4"]
    assert describe(cfg)["dtype"] == "3xbf16,1xint4"
    assert to_dict(cfg)["layers"][3]["mem_dtype"] == "int4" and from_dict(ModelConfig, to_dict(cfg)) == cfg
    assert "mem_dtype" not in to_dict(tiny_config())["layers"][0]  # fp32, the default, is not written
    with pytest.raises(ConfigError, match="unknown memory dtype 'int3'"):
        apply_plans(tiny_config(n_layer=4), memory_dtype="int3")
    bad = tiny_config()
    bad.layers[1].mem_dtype = "int3"
    with pytest.raises(ConfigError, match="model.layers.1.mem_dtype: unknown memory dtype 'int3'"):
        check_model(bad)
    assert set(BITS) == set(MEMORY_DTYPES)


def test_txl_budget_prints_the_bytes_of_quantized_layers(capsys):
    argv = ["budget", "--layers", "4", "--d-model", "64", "--memory", "4x32", "--tgt-len", "16"]
    assert main([*argv, "--memory", "4x8", "--memory-dtype", "dtype=int8@first:2,fp32"]) == 0
    out = capsys.readouterr().out
    assert "stored as" in out and "2xint8,2xfp32" in out and "bytes smaller" in out
    full, mixed = 4 * 32 * 64 * 4, 2 * (32 * 64 + 32 * 4) + 2 * 32 * 64 * 4
    assert f"{mixed / 2**20:.3f}" in out and f"{full / 2**20:.3f}" not in out


@pytest.mark.slow
def test_a_run_with_quantized_memory_resumes_bit_for_bit(tmp_path):
    from conftest import tiny_run
    from safetensors.torch import load_file

    from txl.train import checkpoint as ckpt
    from txl.train.loop import Trainer

    sets = {"train.steps": 6, "train.save_every": 3, "train.log_every": 1}
    for name in ("straight", "cut"):
        run = tiny_run(tmp_path, **sets)
        run.model = apply_plans(run.model, memory_dtype="dtype=fp8@first:1,int4")
        Trainer(run, tmp_path / name, progress=False).fit(stop_at=3 if name == "cut" else None)
    run = tiny_run(tmp_path, **sets)
    run.model = apply_plans(run.model, memory_dtype="dtype=fp8@first:1,int4")
    Trainer(run, tmp_path / "cut", resume=True, progress=False).fit()
    a, b = (load_file(str(ckpt.find_checkpoint(tmp_path / n) / "model.safetensors")) for n in ("straight", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = ckpt.load_state(ckpt.find_checkpoint(tmp_path / "cut"))["mems"][0]  # rank 0's
    assert any(k.endswith(".h_scale") for k in saved) and saved["0.0.h"].dtype == torch.float8_e4m3fn


def test_quantized_memory_is_refused_by_export_and_mixed_budgets_compare():
    from txl.interop.convert import InteropError, export_state
    from txl.model.budget import budgets_text

    cfg = tiny_config(n_layer=2, memory="4")
    quantized = apply_plans(cfg, memory_dtype="dtype=int8@last:1,fp32")
    with pytest.raises(InteropError, match=r"layers \[1\] store their memory quantized"):
        export_state(TransformerXL(quantized), "original")
    text = budgets_text([budget(cfg, 8), budget(quantized, 8)])  # one plan all fp32, one not
    assert "stored as" in text and "1xfp32,1xint8" in text


def test_memory_stored_quantized_reads_back_whatever_the_plan_says_now():
    from txl.model.cache import Stored

    stored = Stored.of(torch.randn(1, 3, 8), "int8")
    assert stored.values.dtype == torch.int8 and stored.read(torch.float32).dtype == torch.float32  # dequantized


def test_a_layer_cache_is_typed_and_saves_under_the_names_checkpoints_always_had():
    """A checkpoint of an earlier txl saved each layer's memory as flat tensors by name; they read back typed."""
    from txl.model.cache import LayerCache

    x = torch.randn(2, 5, 8)
    flat = {**quantize(x, "int8"), **quantize(x[:, :2], "int8", "sink"), "c": x[:, :1], "sikf_s": torch.ones(2)}
    cache = LayerCache.from_dict(flat)
    assert cache.recent.values.dtype == torch.int8 and cache.recent.scale is not None and cache.slots.scale is None
    assert cache.sinks.positions == 2 and cache.positions == 5 + 2 + 1 and set(cache.state) == {"sikf_s"}
    assert cache.to_dict().keys() == flat.keys() and all(cache.to_dict()[k] is flat[k] for k in flat)


@pytest.mark.parametrize(
    "plan",
    [
        {"memory": "16"},
        {"memory": "16", "sinks": "sinks=2"},
        {"memory": "8", "compress": "compress=4/2:mean"},
        {"memory": "16", "memory_dtype": "dtype=int8"},
        {"memory": "16", "memory_dtype": "dtype=bf16@first:1,fp32"},
    ],
    ids=["fp32", "sinks", "compressed", "int8", "mixed"],
)
def test_the_memory_holds_exactly_the_bytes_the_budget_counts(plan):
    """Every cached tensor in storage of its own: no fp32 memory, sink or compressed slot is a view that keeps the
    longer [memory; segment] (or the whole segment) alive."""
    from txl.model.budget import budget
    from txl.model.plans import apply_plans
    from txl.model.transformer import TransformerXL
    from txl.train.presets import get_preset

    cfg = apply_plans(get_preset("tiny").model, **plan)
    model, mems, batch, length = TransformerXL(cfg).eval(), None, 3, 16
    with torch.no_grad():
        for _ in range(4):  # past every memory's length: sinks, slots and memory full
            x = torch.randint(0, 256, (batch, length))
            _, mems = model(x, mems, x)
    tensors = [t for m in mems for t in m.to_dict().values()]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    assert sum(storages.values()) == budget(cfg, length, batch).bytes
