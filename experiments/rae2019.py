"""Compressed memory (Rae et al. 2019, the Compressive Transformer) against raw memory of the same bytes.

Each layer keeps a raw memory of half the reference length and as many compressed slots, each
pooling `rate` states that fell out of the raw memory: the same cached positions (and bytes) as
the reference raw memory, reaching (1 + rate) / 2 times as far. The pooling functions are mean,
max and a learned strided convolution (trained by the attention-reconstruction loss, its weight
train.recon_weight); rate 4 is the paper's usual setting, rate 2 beside it. Raw memories of half
and twice the reference frame them; mean and max compression applied at evaluation time to the
reference model sit beside the trained ones. Plotted against memory bytes.
"""

from __future__ import annotations

from experiments.common import lm_base, memory_lengths
from txl.model.plans import apply_plans
from txl.study.registry import Experiment, Variant, experiment


@experiment("rae2019/compressive", "compressed memory (mean, max, conv; rates 2, 4) against raw memory of equal bytes")
def compressive(scale: str) -> Experiment:
    base = lm_base(scale)
    long, _ = memory_lengths(scale)
    ref, half = long // 2, long // 4
    base.model = apply_plans(base.model, memory=str(ref))
    trained = f"raw {ref} (trained)"
    variants = [
        Variant(trained, memory=str(ref)),
        Variant(f"raw {half}", memory=str(half)),
        Variant(f"raw {2 * ref}", memory=str(2 * ref)),
    ]
    for rate, fn in ((4, "mean"), (4, "max"), (4, "conv"), (2, "mean")):
        variants.append(Variant(f"raw {half} + {half}/{rate}:{fn}", memory=str(half), compress=f"{half}/{rate}:{fn}"))
    for fn in ("mean", "max"):
        name = f"raw {half} + {half}/4:{fn} (at evaluation)"
        variants.append(Variant(name, of=trained, memory=str(half), compress=f"{half}/4:{fn}"))
    return Experiment(
        scale, base, variants, summary="compressed against raw memory", x_axis="memory_bytes", baseline=trained
    )
