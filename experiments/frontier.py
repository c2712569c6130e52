"""Memory in bytes: every family of memory reduction at the same byte budgets, on one plot of loss against bytes.

At a half, a quarter and an eighth of the all-long model's cache bytes, the largest plan of each
family that fits:

- fewer long-range layers (Rae & Razavi: k interleaved layers long, the rest short), the
  comparison every other family is held to: trained from scratch, cut at evaluation, adapted;
- long memory only in the top layers, the attention range of the layers below limited to the
  short memory (the lower-range intervention);
- one shorter memory in every layer;
- the long memory stored as int8 (and int4), as long as it fits;
- a short raw memory with as many compressed slots (rate 4, mean pooling);
- a window with 4 attention sinks.

Each family is applied to the all-long model at evaluation time and adapted to it for a short
run (`adapt_steps`); Rae & Razavi's plan is also trained from scratch. Variants are grouped by
budget, so that each is compared (`txl report --pairs`) with the others of the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from experiments.common import adapt_steps, lm_base, memory_lengths
from txl.budget import budget
from txl.experiments import Experiment, Variant, experiment
from txl.plans import apply_plans, describe

FRACTIONS = {"1/2": 2, "1/4": 4, "1/8": 8}  # budgets: the all-long model's cache bytes divided by these


def _largest(fits: Callable[[dict], bool], candidates: list[tuple[str, dict]]) -> tuple[str, dict] | None:
    """The last candidate whose plan fits, for candidates whose bytes grow along the list (by bisection)."""
    lo, hi = 0, len(candidates)  # candidates[:lo] fit, candidates[hi:] do not
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(candidates[mid][1]):
            lo = mid + 1
        else:
            hi = mid
    return candidates[lo - 1] if lo else None


def _fewer_long_layers(fits: Callable[[dict], bool], n: int, long: int, short: int) -> tuple[str, dict] | None:
    """Rae & Razavi's plan of the budget: the most long layers (interleaved) that fit beside a short memory of at
    least 1, that short memory as long as fits (up to `short`)."""
    for k in range(n, -1, -1):
        plans = [(f"lrm={k},srm={m}", {"memory": f"lrm={k}@interleave:{long},srm={m}"}) for m in range(1, short + 1)]
        found = _largest(fits, plans)
        if found is not None:
            return found
    return None


def family_plans(model_cfg, tgt_len: int, limit: int, long: int, short: int) -> dict[str, tuple[str, dict]]:
    """Per family, the largest plan within `limit` bytes: (its name, its plan texts by flag name)."""
    n = model_cfg.n_layer

    def fits(plan: dict) -> bool:
        return budget(apply_plans(model_cfg, **plan), tgt_len).bytes <= limit

    lengths = range(1, long + 1)
    families = {
        "long on top, range below": [
            (f"top {k}", {"memory": f"lrm={k}@last:{long},srm={short}", "attn_range": f"range={short}@first:{n - k}"})
            for k in range(1, n)
        ],
        "shorter memory": [(f"memory {m}", {"memory": str(m)}) for m in lengths],
        "int8": [(f"memory {m} int8", {"memory": str(m), "memory_dtype": "int8"}) for m in lengths],
        "int4": [(f"memory {m} int4", {"memory": str(m), "memory_dtype": "int4"}) for m in lengths],
        "compressed": [
            (f"memory {m} + {m}/4:mean", {"memory": str(m), "compress": f"{m}/4:mean"}) for m in range(1, long + 1)
        ],
        "sinks": [(f"window {m} + 4 sinks", {"memory": str(m), "sinks": "4"}) for m in lengths],
    }
    out: dict[str, tuple[str, dict]] = {}
    for family, candidates in {"fewer long layers": None, **families}.items():
        found = _fewer_long_layers(fits, n, long, short) if candidates is None else _largest(fits, candidates)
        same = lambda a, b: describe(apply_plans(model_cfg, **a)) == describe(apply_plans(model_cfg, **b))  # noqa: E731
        if found is not None and not any(same(found[1], plan) for _, plan in out.values()):  # another family's plan
            out[family] = found
    return out


@experiment("memory/frontier", "every memory-reduction family at a half, a quarter and an eighth of the bytes")
def frontier(scale: str) -> Experiment:
    base = lm_base(scale)
    long, short = memory_lengths(scale)
    base.model = apply_plans(base.model, memory=str(long))
    full = budget(base.model, base.train.tgt_len).bytes
    steps = adapt_steps(scale) // 2
    reference = "all long (trained)"
    variants = [Variant(reference, memory=str(long), group="all long")]
    for label, divisor in FRACTIONS.items():
        group = f"{label} of the bytes"
        plans = family_plans(base.model, base.train.tgt_len, full // divisor, long, short)
        for family, (name, plan) in plans.items():
            tag = f"{label}: {name}"
            if family == "fewer long layers":
                variants.append(Variant(f"{tag} (trained)", group=group, **plan))
            variants.append(Variant(f"{tag} (at evaluation)", of=reference, group=group, **plan))
            if family != "int4":
                variants.append(Variant(f"{tag} (adapted)", of=reference, group=group, adapt_steps=steps, **plan))
    return Experiment(scale, base, variants, summary="memory reductions at equal bytes", x_axis="memory_bytes")
