"""What a plan search measures itself against, and the budget it can afford: Rae & Razavi's plans of the budget,
at the evaluation's storage and at each precision searched, the uniform plan a precision alone buys, and the one
line that refuses a budget below every plan on the grid."""

from __future__ import annotations

from collections.abc import Callable

from txl.core.errors import TxlError
from txl.model.dimensions import live, searched
from txl.plan.language import MEMORY, PLACEMENTS, parse_plan
from txl.search.choices import CHOICES, option


def reference_plans(
    n_layer: int, long: int, short: int, fits: Callable[[list[int]], bool]
) -> list[tuple[str, list[int]]]:
    """Rae & Razavi's plans of the budget: the most long-range layers (memory `long`, the rest `short`) that fit,
    placed first, interleaved and last; none when even all-short does not fit."""
    for count in range(n_layer, -1, -1):
        plans = [
            (
                f"lrm={count}" + (f"@{p}" if 0 < count < n_layer else ""),
                parse_plan(f"lrm={count}@{p}:{long},srm={short}", n_layer, MEMORY),
            )
            for p in PLACEMENTS
        ]
        if all(fits(lens) for _, lens in plans):
            return plans if 0 < count < n_layer else plans[:1]
    return []


FLAG_OF = live(lambda: {dim.flag: f"--{dim.grid}" for dim in searched().values()})


def _cheapest_words(options: list) -> str:
    """'every layer at 0, sinks 4' (or layer by layer where they differ): what the cheapest plan keeps."""

    def words(o) -> str:
        return ", ".join([str(o[0])] + [f"{f.replace('memory_', '')} {v}" for f, v in zip(CHOICES, o[1:]) if v])

    said = [words(o) for o in options]
    return (
        f"every layer at {said[0]}"
        if len(set(said)) == 1
        else "; ".join(f"layer {i} at {w}" for i, w in enumerate(said))
    )


def check_affordable(costs: list[dict], grid: list, limit: float, units: str, grids: dict) -> None:
    """Refuse, in one line naming what the cheapest plan keeps, a budget below every plan on the grid."""
    cheap = [min(grid, key=lambda o: c[o]) for c in costs]  # each layer's cheapest option
    cheapest = sum(c[o] for c, o in zip(costs, cheap))
    if cheapest > limit + 1e-9:
        raise TxlError(
            f"a budget of {limit:g} {units} is below the cheapest plan on the grid ({cheapest:g}: "
            f"{_cheapest_words(cheap)}); raise --budget, or add cheaper values to --lengths"
            + "".join(f" or {FLAG_OF[f]}" for f in grids)
        )


def add_reference(run, search, options: list, name: str) -> None:
    """Evaluate a reference plan (`run`: the search's evaluator) and keep it among `search`'s references once."""
    e = run(options, name)
    if all(e is not r for r in search.references):  # one layer interleaved is one layer last
        search.references.append(e)


def references_at(run, search, dtype: str, sizes: tuple, as_kept: Callable, costs_of) -> None:
    """The references of a search that chooses precisions, at one of them: Rae & Razavi's plans stored at `dtype`,
    and the uniform plan of the longest length on the grid that fits at `dtype` (every layer alike)."""
    long, short, lengths = sizes
    n_layer, k = len(run.costs), 1 + list(CHOICES).index("memory_dtype")

    def at(lens: list[int]) -> list:
        return [option(o[:k] + (dtype,) + o[k + 1 :]) for o in as_kept(lens)]

    new = sorted({o for v in {*lengths, long, short} for o in at([v] * n_layer)} - set(run.costs[0]), key=str)
    for layer, costs in zip(run.costs, costs_of(new) if new else [{}] * n_layer):
        layer.update(costs)
    fits = lambda lens: run.cost(at(lens)) <= search.limit + 1e-9  # noqa: E731
    plans = [(f"{name} at {dtype}", lens) for name, lens in reference_plans(n_layer, long, short, fits)]
    longest = next((v for v in sorted(lengths, reverse=True) if fits([v] * n_layer)), None)
    plans += [] if longest is None else [(f"uniform {longest} at {dtype}", [longest] * n_layer)]
    for name, lens in plans:
        add_reference(run, search, at(lens), name)
