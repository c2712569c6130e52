"""FastRPB (Zubkov & Gavrilov, 2022) with softmax and linear attention, beside ALiBi and T5 biases."""

from __future__ import annotations

from experiments.common import lm_base, memory_lengths
from txl.study.registry import Experiment, Variant, experiment


@experiment(
    "fastrpb/bias", "with and without FastRPB, for softmax (xl) and linear (sikf) attention; ALiBi and T5 beside them"
)
def bias(scale: str) -> Experiment:
    base = lm_base(scale)
    long, _ = memory_lengths(scale)
    base.model.fastrpb.max_len = long + base.train.tgt_len + (base.eval.tgt_len or 0)
    variants = [
        Variant(attn, memory=str(long), attn=attn)
        for attn in ("xl", "xl+fastrpb", "sikf", "sikf+fastrpb", "alibi", "t5")
    ]
    return Experiment(scale, base, variants, summary="relative position biases and linear attention")
