"""Base configurations shared by the experiment definitions, one per scale."""

from __future__ import annotations

from txl.config import EvalConfig, ModelConfig, RunConfig
from txl.plans import apply_plans
from txl.presets import get_preset


def lm_base(scale: str) -> RunConfig:
    """A language model to intervene on: tiny (tests), small (a CPU, minutes a run), medium (a CPU, where
    training with long memory pays beyond the seed noise), paper (Rae & Razavi's 24 layers on enwik8)."""
    if scale == "tiny":
        run = get_preset("tiny")
        run.train.steps = 3
        run.data.max_tokens = 20_000
        run.eval.max_segments = 4
        return run
    if scale == "small":
        run = get_preset("small")
        run.model = apply_plans(
            ModelConfig(vocab_size=256, n_layer=6, d_model=128, n_head=4, d_head=32, d_inner=512, dropout=0.1),
            memory="64",
        )
        run.train.steps, run.train.eval_every, run.train.save_every = 800, 0, 400
        run.train.tgt_len, run.train.batch_size = 32, 16
        run.data.max_tokens = 1_000_000
        run.eval = EvalConfig(split="valid", tgt_len=32, batch_size=16, max_segments=120)
        return run
    if scale == "medium":
        return medium_base()
    run = get_preset("enwik8-large")  # 24 layers, d 1024: the model Rae & Razavi intervene on
    run.train.tgt_len = 512
    run.eval = EvalConfig(split="valid", tgt_len=512, batch_size=10)
    return run


def medium_base() -> RunConfig:
    """The small model where memory matters more: segments of 16 bytes (a short memory of 8 then sees little
    of a file, a long one of 128 much), no dropout, twice the steps and fresh text throughout (about 3 min a
    run with short memories, 6 with all long, on two CPU cores)."""
    run = get_preset("small")
    run.model = apply_plans(
        ModelConfig(vocab_size=256, n_layer=6, d_model=128, n_head=4, d_head=32, d_inner=512, dropout=0.0),
        memory="128",
    )
    run.train.steps, run.train.eval_every, run.train.save_every = 1500, 0, 500
    run.train.tgt_len, run.train.batch_size = 16, 32
    run.data.max_tokens = 2_000_000
    run.eval = EvalConfig(split="valid", tgt_len=16, batch_size=16, max_segments=400)
    return run


def memory_lengths(scale: str) -> tuple[int, int]:
    """(long, short) memory lengths: Rae & Razavi's 2304 and 128 at paper scale, shrunk with the model below it."""
    return {"tiny": (16, 4), "small": (64, 8), "medium": (128, 8), "paper": (2304, 128)}[scale]


def lrm_counts(n_layer: int) -> list[int]:
    """Rae & Razavi's counts 0, 1, 2, 4, 6, 12, 24 of 24 layers, scaled to n_layer."""
    return sorted(c for c in {0, 1, 2, n_layer // 6, n_layer // 4, n_layer // 2, n_layer} if c <= n_layer)


def adapt_steps(scale: str) -> int:
    """How long an adapted variant trains the source's model under its plan: a quarter of a small run."""
    return {"tiny": 2, "small": 200, "medium": 400, "paper": 20_000}[scale]
