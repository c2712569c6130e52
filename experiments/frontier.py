"""Memory in bytes: every family of memory reduction at the same byte budgets, trained, cut and adapted.

At a quarter and an eighth of the all-long model's cache bytes, each family's plan is the largest that fits,
so that each spends its budget:

- fewer long-range layers (Rae & Razavi): the most long layers (interleaved) that fit, the short memory of the
  rest as long as the bytes they leave allow;
- long memory only in the top layers, the attention range of the layers below limited to their short memory
  (the lower-range intervention), the short memory as long as fits (or, where no long layer fits, the top one's
  memory as long as fits beside the short memory of the rest);
- one shorter memory in every layer;
- the memory stored as int8 or int4, as long as the bytes buy (longer than the trained length where they do);
- a raw memory with as many compressed slots of 4 states each, pooled by mean or by the Compressive
  Transformer's learned convolution (trained by its reconstruction loss);
- a window with 4 attention sinks, taken anew from the current weights every tenth of training.

Every family is trained from scratch with its plan, applied to the all-long model at evaluation time (but the
learned compression, whose convolution the all-long model never trained), and adapted to it for a short run
(`adapt_steps`), beside the control that adapts the all-long model to its own plan for the same steps: an adapted
row is read against that control, a cut row against its source model, a trained row against the other trained
rows of its budget. A plan that two families share at a budget is one variant, named for both. Each variant
records the bytes of its budget, so that a report shows the share it spends.
"""

from __future__ import annotations

from collections.abc import Callable

from experiments.common import adapt_steps, lm_base, memory_lengths
from txl.model.budget import budget
from txl.model.plans import apply_plans, describe
from txl.study.registry import Experiment, Variant, experiment

FRACTIONS = {"1/4": 4, "1/8": 8}  # budgets: the all-long model's cache bytes divided by these
SINKS = 4
RATE = 4  # states pooled into one compressed slot


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


def _most_long_layers(fits, counts, plan: Callable[[int, int], tuple[str, dict]], long: int):
    """For the first count of `counts` whose long layers fit beside a short memory of at least 1, the plan with
    that short memory as long as fits (below `long`)."""
    for k in counts:
        found = _largest(fits, [plan(k, m) for m in range(1, long)])
        if found is not None:
            return found
    return None


def _top(n: int, long: int, short: int, k: int = 1) -> tuple[str, dict]:
    """The top `k` layers keep `long` states, the rest `short`, and the attention of those below reaches only that."""
    plan = {"memory": f"lrm={k}@last:{long},srm={short}", "attn_range": f"range={short}@first:{n - k}"}
    return f"top {k}: {long}, srm={short}", plan


def _finders(n: int, long: int, short: int) -> dict[str, Callable]:
    """Per family, how to find its largest plan that fits: fits -> (name, plan texts) or None."""
    lengths = range(1, long + 1)
    quantized = range(1, 8 * long + 1)  # a quantized memory may be longer than the trained one
    interleaved = lambda k, m: (f"lrm={k},srm={m}", {"memory": f"lrm={k}@interleave:{long},srm={m}"})  # noqa: E731
    top = lambda k, m: _top(n, long, m, k)  # noqa: E731

    def listed(candidates: list) -> Callable:
        return lambda fits: _largest(fits, candidates)

    def on_top(fits):  # where no long layer of the long length fits, the top one's memory as long as fits
        found = _most_long_layers(fits, range(n - 1, 0, -1), top, long)
        return found or _largest(fits, [_top(n, length, short) for length in range(short + 1, long)])

    def memory(m: int, **plan) -> dict:
        return {"memory": str(m), **plan}

    return {
        "fewer long layers": lambda fits: _most_long_layers(fits, range(n, -1, -1), interleaved, long),
        "long on top, range below": on_top,
        "shorter memory": listed([(f"memory {m}", memory(m)) for m in lengths]),
        "int8": listed([(f"memory {m} int8", memory(m, memory_dtype="int8")) for m in quantized]),
        "int4": listed([(f"memory {m} int4", memory(m, memory_dtype="int4")) for m in quantized]),
        **{
            f"compressed, {fn}": listed(
                [(f"memory {m} + {m}/{RATE}:{fn}", memory(m, compress=f"{m}/{RATE}:{fn}")) for m in lengths]
            )
            for fn in ("mean", "conv")
        },
        "sinks": listed([(f"window {m} + {SINKS} sinks", memory(m, sinks=str(SINKS))) for m in lengths]),
    }


def family_plans(model_cfg, tgt_len: int, limit: int, long: int, short: int) -> dict[str, tuple[str, dict]]:
    """Per family, the largest plan within `limit` bytes: (its name, its plan texts by flag name). A plan another
    family found first is not repeated: that family's name then names both ("lrm=0,srm=16 = memory 16")."""

    def fits(plan: dict) -> bool:
        return budget(apply_plans(model_cfg, **plan), tgt_len).bytes <= limit

    out: dict[str, tuple[str, dict]] = {}
    first: dict[str, str] = {}  # a plan's canonical form -> the family that found it first
    for family, find in _finders(model_cfg.n_layer, long, short).items():
        found = find(fits)
        if found is None:
            continue
        key = str(describe(apply_plans(model_cfg, **found[1])))
        if key in first:
            name, plan = out[first[key]]
            out[first[key]] = (f"{name} = {found[0]}", plan)
        else:
            first[key], out[family] = family, found
    return out


def _refresh(plan: dict, steps: int) -> list[str]:
    """Sinks a model trains with are taken anew every tenth of its steps: what its current weights make."""
    return [f"train.sink_refresh={max(1, steps // 10)}"] if plan.get("sinks") else []


@experiment("memory/frontier", "every memory-reduction family at a quarter and an eighth of the bytes, trained")
def frontier(scale: str) -> Experiment:
    base = lm_base(scale)
    long, short = memory_lengths(scale)
    base.model = apply_plans(base.model, memory=str(long))
    full = budget(base.model, base.train.tgt_len).bytes
    steps = adapt_steps(scale) // 2
    reference = "all long (trained)"
    variants = [
        Variant(reference, memory=str(long), group="all long", budget_bytes=full),
        Variant(
            "all long (adapted)", of=reference, memory=str(long), group="all long", budget_bytes=full, adapt_steps=steps
        ),
    ]
    for label, divisor in FRACTIONS.items():
        group, limit = f"{label} of the bytes", full // divisor
        for family, (name, plan) in family_plans(base.model, base.train.tgt_len, limit, long, short).items():
            tag = f"{label}: {name}"
            common = dict(group=group, budget_bytes=limit, **plan)
            variants.append(Variant(f"{tag} (trained)", set=_refresh(plan, base.train.steps), **common))
            if family != "compressed, conv":  # the all-long model has no trained compression to cut to
                variants.append(Variant(f"{tag} (at evaluation)", of=reference, **common))
            variants.append(
                Variant(f"{tag} (adapted)", of=reference, adapt_steps=steps, set=_refresh(plan, steps), **common)
            )
    return Experiment(scale, base, variants, summary="memory reductions at equal bytes", x_axis="memory_bytes")
