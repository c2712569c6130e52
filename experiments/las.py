"""Locality and smoothness (Zimerman & Wolf, ICML 2024), alone and with reduced memory."""

from __future__ import annotations

from experiments.common import lm_base, memory_lengths
from txl.study.registry import Experiment, Variant, experiment


@experiment("las/locality-smoothness", "xl vs locality only vs smoothness only vs both, with full and reduced memory")
def locality_smoothness(scale: str) -> Experiment:
    base = lm_base(scale)
    n = base.model.n_layer
    long, short = memory_lengths(scale)
    plans = {"full": str(long), "reduced": f"lrm={max(1, n // 6)}@interleave:{long},srm={short}"}
    variants = [
        Variant(f"{attn} / {mem}", memory=plan, attn=attn)
        for mem, plan in plans.items()
        for attn in ("xl", "las-local", "las-smooth", "las")
    ]
    return Experiment(scale, base, variants, summary="locality and smoothness against memory")
