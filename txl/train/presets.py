"""Named run configurations: the published Transformer-XL setups and small ones for a CPU.

Each preset is a plain function returning a RunConfig; variants are made by calling
it and changing fields.
"""

from __future__ import annotations

from collections.abc import Callable

from txl.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from txl.core.errors import TxlError
from txl.model.plans import apply_plans

PRESETS: dict[str, Callable[[], RunConfig]] = {}


def preset(fn: Callable[[], RunConfig]) -> Callable[[], RunConfig]:
    name = fn.__name__.replace("_", "-")
    if name in PRESETS:
        raise ValueError(f"preset {name!r} is defined twice")
    PRESETS[name] = fn
    return fn


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise TxlError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]()


@preset
def enwik8_base() -> RunConfig:
    """The original code's enwik8 base run: 12 layers, d 512, 1.06 bpc after 400k steps."""
    model = apply_plans(ModelConfig(), memory="512")
    return RunConfig(
        model=model,
        data=DataConfig(corpus="enwik8"),
        train=TrainConfig(
            steps=400_000, batch_size=22, tgt_len=512, lr=2.5e-4, clip=0.25, eval_every=4000, save_every=4000
        ),
        eval=EvalConfig(tgt_len=80, memory="2100", clamp_len=820, same_length=True),
    )


@preset
def enwik8_large() -> RunConfig:
    """The paper's enwik8 large model: 24 layers, d 1024, 0.99 bpc."""
    model = apply_plans(
        ModelConfig(n_layer=24, d_model=1024, n_head=8, d_head=128, d_inner=3072, dropout=0.15), memory="768"
    )
    return RunConfig(
        model=model,
        data=DataConfig(corpus="enwik8"),
        train=TrainConfig(
            steps=400_000, batch_size=22, tgt_len=768, lr=2.5e-4, warmup=4000, eval_every=4000, save_every=4000
        ),
        eval=EvalConfig(tgt_len=128, memory="3800", clamp_len=1000, same_length=True),
    )


@preset
def wt103_base() -> RunConfig:
    """The original code's WikiText-103 base run: 16 layers, d 410, adaptive softmax, 24.0 perplexity."""
    model = apply_plans(
        ModelConfig(
            vocab_size=267_735,
            n_layer=16,
            d_model=410,
            n_head=10,
            d_head=41,
            d_inner=2100,
            dropout=0.1,
            cutoffs=[20_000, 40_000, 200_000],
            div_val=1,
        ),
        memory="150",
    )
    return RunConfig(
        model=model,
        data=DataConfig(corpus="wikitext-103"),
        train=TrainConfig(
            steps=200_000, batch_size=60, tgt_len=150, lr=2.5e-4, clip=0.25, eval_every=4000, save_every=4000
        ),
        eval=EvalConfig(tgt_len=64, memory="640", clamp_len=400, same_length=True),
    )


@preset
def wt103_base_gpu() -> RunConfig:
    """A GPU-optimised port's WikiText-103 base: 16 layers, d 512, tgt = mem = 192, \
23.2 perplexity (with LAMB, batch 256)."""
    model = apply_plans(
        ModelConfig(
            vocab_size=267_735,
            n_layer=16,
            d_model=512,
            n_head=8,
            d_head=64,
            d_inner=2048,
            dropout=0.1,
            cutoffs=[19_997, 39_997, 199_997],
            div_val=1,
        ),
        memory="192",
    )
    return RunConfig(
        model=model,
        data=DataConfig(corpus="wikitext-103"),
        train=TrainConfig(
            steps=40_000,
            batch_size=32,
            tgt_len=192,
            lr=1e-2,
            warmup=1000,
            optimizer="lamb",
            eval_every=2000,
            save_every=2000,
        ),
        eval=EvalConfig(tgt_len=64, memory="640", clamp_len=400, same_length=True),
    )


@preset
def small() -> RunConfig:
    """A CPU-sized model, 4 layers, d 128: about 2 min on two cores in bytes, 16 on word-level PTB.

    Training says how long is left after its first log row."""
    model = apply_plans(
        ModelConfig(vocab_size=256, n_layer=4, d_model=128, n_head=4, d_head=32, d_inner=512, dropout=0.1), memory="64"
    )
    return RunConfig(
        model=model,
        data=DataConfig(corpus="pystdlib", max_tokens=2_000_000),
        train=TrainConfig(
            steps=2000,
            batch_size=16,
            tgt_len=64,
            lr=1e-3,
            warmup=100,
            clip=0.25,
            eval_every=500,
            save_every=500,
            eval_segments=50,
            log_every=25,
        ),
        eval=EvalConfig(split="valid", tgt_len=32, batch_size=16, max_segments=200),
    )


@preset
def tiny() -> RunConfig:
    """The smallest model that learns something: for tests and smoke runs."""
    model = apply_plans(
        ModelConfig(vocab_size=256, n_layer=2, d_model=32, n_head=2, d_head=16, d_inner=64, dropout=0.0), memory="16"
    )
    return RunConfig(
        model=model,
        data=DataConfig(corpus="pystdlib", max_tokens=100_000),
        train=TrainConfig(
            steps=40,
            batch_size=4,
            tgt_len=16,
            lr=3e-3,
            clip=0.25,
            eval_every=0,
            save_every=0,
            eval_segments=10,
            log_every=10,
        ),
        eval=EvalConfig(split="valid", tgt_len=16, batch_size=4, max_segments=20),
    )
