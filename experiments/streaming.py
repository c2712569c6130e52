"""Attention sinks (StreamingLLM, Xiao et al. 2023): the stream's first few states kept for good beside a window.

StreamingLLM keeps 4 initial tokens beside a window of recent ones, because a model trained
with a full context puts much of its attention on them. A Transformer-XL layer's window is its
memory; its sinks (txl.model.cache.take_sinks) sit just before the oldest memory. Here a model trained
with long memory is cut to a short window with 0, 4 or 16 sinks per layer at evaluation time, and
models trained with the short window, with and without 4 sinks, sit beside them, and the long
model adapted to the short window (with 0 or 4 sinks) for a quarter of a run: do the sinks buy
back what the window loses, and is the answer different for a model trained with them? Plotted
against memory bytes (sinks cost bytes too). Training with sinks takes them anew ten times a run
(`train.sink_refresh`), so the sinks a model learns to use are what its current weights produce.
"""

from __future__ import annotations

from experiments.common import adapt_steps, lm_base, memory_lengths
from txl.model.plans import apply_plans
from txl.study.registry import Experiment, Variant, experiment

TRAINED = "long memory (trained)"
SINKS = (0, 4, 16)


@experiment("streaming/sinks", "a short window with 0, 4 or 16 attention sinks per layer, trained and at evaluation")
def sinks(scale: str) -> Experiment:
    base = lm_base(scale)
    long, short = memory_lengths(scale)
    base.model = apply_plans(base.model, memory=str(long))
    steps = adapt_steps(scale)
    # training with sinks takes them anew ten times a run: the sinks it learns to use are its current weights'
    fresh = [f"train.sink_refresh={max(1, base.train.steps // 10)}"]
    variants = [
        Variant(TRAINED, memory=str(long)),
        Variant(f"window {short} (trained)", memory=str(short)),
        Variant(f"window {short} + 4 sinks (trained)", memory=str(short), sinks="4", set=fresh),
    ]
    variants += [Variant(f"window {short} + {k} sinks", of=TRAINED, memory=str(short), sinks=str(k)) for k in SINKS]
    variants += [
        Variant(
            f"window {short} + {k} sinks (adapted)",
            of=TRAINED,
            memory=str(short),
            sinks=str(k),
            adapt_steps=steps,
            set=[f"train.sink_refresh={max(1, steps // 10)}"] if k else [],
        )
        for k in (0, 4)
    ]
    return Experiment(
        scale, base, variants, summary="attention sinks beside a short window", x_axis="memory_bytes", baseline=TRAINED
    )
