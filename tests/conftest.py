"""Shared helpers: tiny configs and segment-by-segment runners."""

from __future__ import annotations

import os

# Without a GPU, txl's Triton kernel runs in Triton's interpreter (set before anything imports triton)
if "TRITON_INTERPRET" not in os.environ:
    try:
        import torch as _torch

        if not _torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    except ImportError:  # pragma: no cover
        pass

import pytest
import torch

import txl.attention.fused  # noqa: F401  (its kernels are made now, interpreted, whichever test first unsets the variable)
from txl.config import ModelConfig
from txl.model.dimensions import plan_flags
from txl.model.plans import apply_plans

torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny_config(n_layer: int = 2, memory: str = "8", **overrides) -> ModelConfig:
    """A model small enough to run hundreds of times in a test, dropout off."""
    fields = dict(vocab_size=23, n_layer=n_layer, d_model=16, n_head=2, d_head=8, d_inner=32, dropout=0.0, dropatt=0.0)
    plans = {k: overrides.pop(k) for k in plan_flags() if k != "memory" and k in overrides}
    fields.update(overrides)
    return apply_plans(ModelConfig(**fields), memory=memory, **plans)


def run_segments(model, tokens: torch.Tensor, tgt_len: int, hidden: bool = True) -> torch.Tensor:
    """Process `tokens` segment by segment, carrying memory; concatenate the outputs along time."""
    mems, outs = None, []
    for start in range(0, tokens.size(1), tgt_len):
        chunk = tokens[:, start : start + tgt_len]
        out, mems = model.hidden(chunk, mems) if hidden else model(chunk, mems)
        outs.append(out)
    return torch.cat(outs, dim=1)


def assert_fast_path_matches_plain(cfg, impl: str, tokens: tuple = (2, 20), tgt_len: int = 5) -> None:
    """The same weights on the plain path and on `impl` (sdpa, flex), segment by segment: equal outputs to 1e-5."""
    from txl.model.transformer import TransformerXL

    plain = TransformerXL(cfg).eval()
    fast = TransformerXL(apply_plans(cfg)).eval()
    fast.load_state_dict(plain.state_dict())
    fast.cfg.attn_impl = impl
    ids = torch.randint(0, cfg.vocab_size, tokens)
    with torch.no_grad():
        torch.testing.assert_close(
            run_segments(fast, ids, tgt_len), run_segments(plain, ids, tgt_len), rtol=0, atol=1e-5
        )


def cache_bytes(mems) -> int:
    """Bytes the tensors of a model's memory hold (values, scales, sinks, slots)."""
    return sum(t.numel() * t.element_size() for cache in mems for t in cache.to_dict().values())


@pytest.fixture
def float64():
    """Run a test in float64 so that tiny influences are not rounded away."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def worker_failure(proc) -> str:
    """What a failed torchrun job printed that says why: each worker's error lines, then the tail."""
    lines = proc.stderr.splitlines()
    keys = ("error", "terminate", "what()", "abort", "exception", "signal")
    why = [ln for ln in lines if any(k in ln.lower() for k in keys) and "elastic" not in ln][:30]
    return "\n".join(why) + "\n--- tail ---\n" + proc.stderr[-1500:]


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu need CUDA; without it they are reported as skipped, not silently passed."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def result_rows(*rows: dict) -> list:
    """Hand-made results rows, as read back from a results file (fields a test does not care about filled in)."""
    from txl.study.results import ResultRow

    out = []
    for r in rows:
        full = {"scale": "tiny", "config_hash": "0" * 12, **r}
        full["plan"] = {"memory": "", "range": "", "attn": "", **r.get("plan", {})}
        full["budget"] = {"cached_positions": 0, "memory_bytes": 0, "receptive_field": 0, **r.get("budget", {})}
        out.append(ResultRow.from_dict(full))
    return out


def tiny_run(tmp_path, **sets):
    """The tiny preset, its data cached under tmp_path, with dotted overrides (`**{"train.steps": 20}`)."""
    from txl.config import apply_overrides
    from txl.model.plans import check_run
    from txl.train.presets import get_preset

    run = get_preset("tiny")
    run.data.root = str(tmp_path / "data")
    apply_overrides(run, [f"{k}={v}" for k, v in sets.items()])
    return check_run(run)


@pytest.fixture
def messages(caplog):
    """txl's log messages: `messages()` lists those since the last `messages.clear()` (INFO and up)."""
    import logging

    caplog.set_level(logging.INFO, logger="txl")

    class Messages:
        def __call__(self) -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name.startswith("txl")]

        def clear(self) -> None:
            caplog.clear()

    return Messages()
