"""Rae & Razavi, "Do Transformers Need Deep Long-Range Memory?" (ACL 2020).

Keep the model and its parameters fixed and change, per layer, how far back it
looks: the number of long-range memory (LRM) layers, their placement, the short-range
memory (SRM) length, and the attention range of the lower layers.
"""

from __future__ import annotations

from experiments.common import lm_base, lrm_counts, memory_lengths
from txl.study.registry import Experiment, Variant, experiment


def lrm_plan(count: int, long: int, short: int, placement: str = "interleave") -> str:
    return f"lrm={count}@{placement}:{long},srm={short}"


@experiment("rae2020/lrm-count", "0, 1, 2, 4, 6, 12, all long-range memory layers (interleaved), the rest short-range")
def lrm_count(scale: str) -> Experiment:
    base = lm_base(scale)
    n = base.model.n_layer
    long, short = memory_lengths(scale)
    variants = [Variant(f"lrm={c}", memory=lrm_plan(c, long, short)) for c in lrm_counts(n)]
    # the cheap version: one all-LRM model, its memories truncated layer by layer at evaluation time
    variants += [
        Variant(f"eval lrm={c}", of=f"lrm={n}", memory=lrm_plan(c, long, short)) for c in lrm_counts(n) if c < n
    ]
    return Experiment(scale, base, variants, summary="number of long-range memory layers", baseline=f"lrm={n}")


@experiment("rae2020/lrm-placement", "the same number of long-range memory layers placed first, interleaved, or last")
def lrm_placement(scale: str) -> Experiment:
    base = lm_base(scale)
    count = max(2, base.model.n_layer // 6) if base.model.n_layer > 2 else 1
    long, short = memory_lengths(scale)
    variants = [
        Variant(f"{p} x{count}", memory=lrm_plan(count, long, short, p)) for p in ("first", "interleave", "last")
    ]
    return Experiment(
        scale,
        base,
        variants,
        summary="placement of long-range memory layers",
        baseline=f"interleave x{count}",
    )


@experiment("rae2020/srm-length", "the short-range memory length swept, long-range layers fixed")
def srm_length(scale: str) -> Experiment:
    base = lm_base(scale)
    count = max(1, base.model.n_layer // 6)
    long, short = memory_lengths(scale)
    lengths = sorted({0, short // 4, short // 2, short, short * 2, short * 4})
    variants = [Variant(f"srm={s}", memory=lrm_plan(count, long, s)) for s in lengths]
    return Experiment(scale, base, variants, summary="short-range memory length")


@experiment("rae2020/lower-range", "attention range limited in the lower layers, long memories kept above")
def lower_range(scale: str) -> Experiment:
    base = lm_base(scale)
    n = base.model.n_layer
    long, short = memory_lengths(scale)
    memory = lrm_plan(max(1, n // 6), long, short)
    variants = []
    for k in sorted({0, n // 4, n // 2, 3 * n // 4}):
        variants.append(
            Variant(f"range {short} in first {k}", memory=memory, attn_range=f"range={short}@first:{k}" if k else "inf")
        )
    return Experiment(
        scale,
        base,
        variants,
        summary="attention range of the lower layers",
        x_axis="attn_flops_per_token",
    )
