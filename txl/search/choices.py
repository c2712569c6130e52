"""What a plan search chooses per layer beside the memory length (storage, sinks, compressed memory): options,
the plans they make, and the values `txl plan` lists for them (--dtypes, --sinks-grid, --compress-grid)."""

from __future__ import annotations

import itertools

from txl.core.errors import TxlError
from txl.evaluation.evaluate import EvalSpec
from txl.model.dimensions import live, searched
from txl.model.plans import MemoryPlan

# what a search may choose per layer beside the memory length, by flag name: the plan dimension and its kind (every
# registered dimension with a grid flag: txl.model.dimensions)
CHOICES = live(lambda: {dim.flag: (name, dim.kind) for name, dim in searched().items()})
Option = tuple  # (memory length, then a value per CHOICES entry, None where the evaluation's own is kept)


def option(value) -> Option:
    """A bare length as an option (every other choice as the evaluation's), or an option padded likewise."""
    value = value if isinstance(value, tuple) else (value,)
    return value + (None,) * (1 + len(CHOICES) - len(value))


def with_options(plan: MemoryPlan, options, name: str | None = None) -> MemoryPlan:
    """`plan` with each layer's memory length and (where the options name them) its other choices replaced."""
    options = [option(o) for o in options]
    out = plan.with_values("memory", [o[0] for o in options], name)
    for k, (dim, _) in enumerate(CHOICES.values(), 1):
        if any(o[k] is not None for o in options):
            out = out.with_values(dim, [o[k] for o in options])
    return out


def as_planned(model_cfg, plan: MemoryPlan, flag: str) -> list:
    """Each layer's value of one choice (by flag name) under `plan`: the model's where the plan names none."""
    return list(MemoryPlan.of_config(plan.apply(model_cfg)).layers[CHOICES[flag][0]])


def parse_lengths(text: str) -> list[int]:
    """Comma-separated memory lengths >= 0 (0 is a layer without memory), as --lengths takes them."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] < 0:
        raise ValueError(f"expected comma-separated lengths >= 0, e.g. 0,8,16,64, got {text!r}")
    return values


FLAGS = live(lambda: {dim.grid: dim.flag for dim in searched().values()})  # txl plan's flag, per choice


def parse_choices(flag: str, text: str) -> list:
    """Comma-separated values of one choice a search makes per layer, as txl plan's flag (FLAGS) takes them."""
    kind = CHOICES[FLAGS[flag]][1]
    values = [kind.parse_value(v.strip()) for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError(f"expected comma-separated values of {kind.name}, got {text!r}")
    return values


def texts_of(grids: dict[str, list]) -> dict[str, list[str]]:
    return {flag: [str(v) for v in values] for flag, values in grids.items()}


def grid_of(cfg, spec: EvalSpec, lengths: list[int], grids: dict[str, list]):
    """Each layer's options (every length with every combination of the choices searched), and a function
    writing per-layer lengths as options that keep the evaluation's values of the choices (named where searched:
    the trained plan and Rae & Razavi's are stored as the evaluation stores them)."""
    unknown = set(grids) - set(CHOICES)
    if unknown:
        raise TxlError(f"a search chooses {', '.join(CHOICES)} beside lengths, not {sorted(unknown)}")
    kept = [as_planned(cfg, spec.plan, f) if f in grids else [None] * cfg.n_layer for f in CHOICES]
    columns = [grids.get(flag) or [None] for flag in CHOICES]
    grid = [option((v, *rest)) for v in lengths for rest in itertools.product(*columns)]
    return grid, lambda lens: [option((v, *(k[i] for k in kept))) for i, v in enumerate(lens)]
