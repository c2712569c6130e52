"""The README's first command: a small model, then its memory cut and stretched at evaluation."""

from __future__ import annotations

from txl.config import EvalConfig
from txl.study.registry import Experiment, Variant, experiment
from txl.train.presets import get_preset


@experiment(
    "quickstart",
    "train a small model on the built-in corpus, evaluate it with memories from 0 to twice the trained length",
)
def quickstart(scale: str) -> Experiment:
    run = get_preset("tiny" if scale == "tiny" else "small")
    trained_mem = run.model.layers[0].mem_len
    if scale == "tiny":
        run.train.steps = 5
    elif scale in ("small", "medium"):  # the quickstart has no medium size of its own
        run.train.steps, run.train.eval_every, run.train.save_every = 1000, 0, 500
        run.data.max_tokens = 1_500_000
        run.eval = EvalConfig(split="valid", tgt_len=32, batch_size=16, max_segments=200)
    else:
        run = get_preset("enwik8-base")
        trained_mem = 512
    # Training never sees a distance beyond tgt_len + mem_len; clamping there (which changes nothing in
    # training) lets longer evaluation memories reuse the farthest embedding learned, as the original does.
    run.model.clamp_len = run.train.tgt_len + trained_mem
    trained = f"mem {trained_mem} (trained)"
    variants = [Variant(trained, memory=str(trained_mem))]
    for m in (0, trained_mem // 8, trained_mem // 4, trained_mem // 2, trained_mem * 2):
        variants.append(Variant(f"mem {m}", of=trained, memory=str(m)))
    return Experiment(
        scale,
        run,
        sorted(variants, key=lambda v: int(v.memory)),
        summary="one model, its memory cut to nothing and stretched to twice the trained length at evaluation time",
    )
