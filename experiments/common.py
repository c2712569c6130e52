"""Base configurations shared by the experiment definitions, one per scale."""

from __future__ import annotations

from txl.config import EvalConfig, ModelConfig, RunConfig
from txl.model.plans import apply_plans
from txl.train.presets import get_preset


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
        return cpu_base(
            memory=64,
            dropout=0.1,
            steps=800,
            save_every=400,
            tgt_len=32,
            batch_size=16,
            max_tokens=1_000_000,
            eval_segments=120,
        )
    if scale == "medium":
        return medium_base()
    run = get_preset("enwik8-large")  # 24 layers, d 1024: the model Rae & Razavi intervene on
    run.train.tgt_len = 512
    run.eval = EvalConfig(split="valid", tgt_len=512, batch_size=10)
    return run


def cpu_base(
    memory: int,
    dropout: float,
    steps: int,
    save_every: int,
    tgt_len: int,
    batch_size: int,
    max_tokens: int,
    eval_segments: int,
) -> RunConfig:
    """The 6-layer model of the CPU scales (d 128) on the built-in corpus, trained and scored as given."""
    run = get_preset("small")
    run.model = apply_plans(
        ModelConfig(vocab_size=256, n_layer=6, d_model=128, n_head=4, d_head=32, d_inner=512, dropout=dropout),
        memory=str(memory),
    )
    run.train.steps, run.train.eval_every, run.train.save_every = steps, 0, save_every
    run.train.tgt_len, run.train.batch_size = tgt_len, batch_size
    run.data.max_tokens = max_tokens
    run.eval = EvalConfig(split="valid", tgt_len=tgt_len, batch_size=16, max_segments=eval_segments)
    return run


def medium_base() -> RunConfig:
    """The small model where memory matters more: segments of 16 bytes (a short memory of 8 then sees little
    of a file, a long one of 128 much), no dropout, about twice the steps, and fresh text throughout."""
    return cpu_base(
        memory=128,
        dropout=0.0,
        steps=1500,
        save_every=500,
        tgt_len=16,
        batch_size=32,
        max_tokens=2_000_000,
        eval_segments=400,
    )


def memory_lengths(scale: str) -> tuple[int, int]:
    """(long, short) memory lengths: Rae & Razavi's 2304 and 128 at paper scale, shrunk with the model below it."""
    return {"tiny": (16, 4), "small": (64, 8), "medium": (128, 8), "paper": (2304, 128)}[scale]


def lrm_counts(n_layer: int) -> list[int]:
    """Rae & Razavi's counts 0, 1, 2, 4, 6, 12, 24 of 24 layers, scaled to n_layer."""
    return sorted(c for c in {0, 1, 2, n_layer // 6, n_layer // 4, n_layer // 2, n_layer} if c <= n_layer)


def adapt_steps(scale: str) -> int:
    """How long an adapted variant trains the source's model under its plan: a quarter of a small run."""
    return {"tiny": 2, "small": 200, "medium": 400, "paper": 20_000}[scale]
