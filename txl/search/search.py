"""The per-layer memory plan that loses least under a budget, searched on a trained model.

The search starts from the sensitivities (each layer's memory set to each length of a
small grid, and with `grids` to each combination of a length and the other choices searched:
storage precision, attention sinks, compressed memory; the others as trained), predicts a
plan's loss as the trained loss plus the rises of its layers (an additive model), takes the
plans within the budget that the prediction ranks best, and confirms each with an
evaluation-time plan. A local search
then moves one or two layers at a time from the best confirmed plan while evaluations
improve it. Every evaluated plan is kept with its loss, cost and how it was found, and
Rae & Razavi's plans of the same budget (k long-range layers first, interleaved or last,
the rest short, stored as trained) are evaluated beside the winner on the same text.

A layer's choice is an option: (memory length, storage dtype, sinks, compressed memory), a
value None where the search keeps the evaluation's own (that choice not searched). Costs add
over layers in either unit; in MiB a layer costs its bytes (quantized values and scales,
sinks, compressed slots), so a budget in bytes can be spent on more positions stored
coarsely, fewer stored finely, a few sinks, or old states pooled.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from txl.core.errors import TxlError
from txl.core.stats import Interval, bootstrap_difference
from txl.data import Corpus
from txl.evaluation.evaluate import EvalResult, EvalSpec, evaluate
from txl.model.budget import budget
from txl.model.dimensions import DIMENSIONS
from txl.model.plans import MemoryPlan
from txl.model.transformer import TransformerXL
from txl.plan.language import MEMORY, format_plan, parse_plan
from txl.search.choices import CHOICES, grid_of, option, texts_of, with_options
from txl.search.references import add_reference, check_affordable, reference_plans, references_at

log = logging.getLogger(__name__)

UNITS = {
    "positions": "cached positions per sequence",
    "mib": "MiB of cache per sequence (each layer at the precision it stores)",
}


@dataclass
class Evaluated:
    """One evaluated plan: its per-layer memory, cost in the search's unit, loss, and how it was found."""

    mem_lens: list[int]
    cost: float
    how: str
    result: EvalResult
    receptive_field: int = 0
    predicted: float | None = None
    plan: MemoryPlan | None = None  # what was evaluated: the memory with the run's other evaluation settings
    halves: bool = False  # chosen on the first half of the text, compared on the second (see `loss`)
    chosen: dict[str, list] = field(default_factory=dict)  # flag name -> per-layer values the search chose

    @property
    def loss(self) -> float:
        """What the search decides on: the loss over the first half of the evaluation blocks when it chooses on
        half the text (a valid-split search), else over all of them."""
        return half_loss(self.result.blocks, 0) if self.halves else self.result.loss

    @property
    def held_out_loss(self) -> float:
        """The loss over the half of the text the search never looked at (all of it when it did not halve)."""
        return half_loss(self.result.blocks, 1) if self.halves else self.result.loss

    @property
    def memory(self) -> str:
        return format_plan(self.mem_lens, MEMORY)

    @property
    def texts(self) -> dict[str, str]:
        """The choices beside the memory, in the plan language, by flag name (`txl eval --memory-dtype ...`)."""
        return {flag: format_plan(values, CHOICES[flag][1]) for flag, values in self.chosen.items()}

    @property
    def label(self) -> str:
        """The plan in the plan language: lengths, then what else the search chose (`as` the storage)."""
        words = {dim.flag: dim.word or dim.flag for dim in DIMENSIONS.values()}
        return " ".join([self.memory] + [f"{words[f]} {t}" for f, t in self.texts.items()])

    @property
    def options(self) -> tuple:
        columns = [self.chosen.get(flag) or [None] * len(self.mem_lens) for flag in CHOICES]
        return tuple(zip(self.mem_lens, *columns))


def half(blocks: dict, which: int) -> dict:
    """The first (0) or second (1) half of a result's evaluation blocks. Blocks run stream by stream, and each
    stream reads its own stretch of the split in order, so the halves are the first and second half of the text."""
    n = len(blocks["loss"]) // 2
    part = slice(0, n) if which == 0 else slice(n, None)
    return {"loss": blocks["loss"][part], "tokens": blocks["tokens"][part]}


def half_loss(blocks: dict, which: int) -> float:
    h = half(blocks, which)
    return sum(h["loss"]) / max(sum(h["tokens"]), 1.0)


MIN_HALF_BLOCKS = 8  # a search chooses on half the text only when each half keeps this many blocks


@dataclass
class Search:
    limit: float
    unit: str
    lengths: list[int]
    trained: Evaluated
    evaluated: list[Evaluated] = field(default_factory=list)
    best: Evaluated | None = None
    references: list[Evaluated] = field(default_factory=list)
    split: str = "valid"
    settings: dict = field(default_factory=dict)  # how every plan was scored: part of a result row's identity
    grids: dict[str, list] = field(default_factory=dict)  # what was searched beside lengths (CHOICES), by flag

    def versus_best(self, other: Evaluated) -> Interval:
        """other's loss minus the best plan's, with a paired bootstrap over evaluation blocks: over the half of the
        text the search did not choose on, when it chose on half (so the best plan's selection does not make its
        lead look surer than it is), else over all of them."""
        if self.best.halves:
            return bootstrap_difference(half(other.result.blocks, 1), half(self.best.result.blocks, 1))
        return bootstrap_difference(other.result.blocks, self.best.result.blocks)


def default_lengths(trained: list[int]) -> list[int]:
    """0 and the longest trained memory halved down to an eighth: 0, m/8, m/4, m/2, m."""
    m = max(trained)
    return sorted({0, m // 8, m // 4, m // 2, m})


def layer_costs(model_cfg, options: list, tgt_len: int, unit: str, base: MemoryPlan | None = None) -> list[dict]:
    """cost[layer][option]: what one layer with that memory (an Option, or a bare length: stored as `base`
    stores it) adds to the plan's cost (costs add over layers)."""
    costs: list[dict] = [{} for _ in range(model_cfg.n_layer)]
    base = base or MemoryPlan("cost")
    for value in options:
        key = option(value)
        b = budget(with_options(base, [key] * model_cfg.n_layer).apply(model_cfg), tgt_len)
        for i, layer in enumerate(b.layers):
            costs[i][key] = float(layer.cached_positions) if unit == "positions" else layer.bytes / 2**20
    return costs


def plan_cost(
    model_cfg, mem_lens: list[int], tgt_len: int, unit: str = "positions", base: MemoryPlan | None = None
) -> float:
    """What a whole plan costs in the search's unit: the sum of its layers' costs (stored as `base` stores them)."""
    costs = layer_costs(model_cfg, sorted(set(mem_lens)), tgt_len, unit, base)
    return sum(c[option(v)] for c, v in zip(costs, mem_lens))


def check_budget(positions: float | None = None, mib: float | None = None, of: str | None = None) -> None:
    """A budget flag is a number >= 0, or a plan (a command checks before loading anything)."""
    if of is not None and not of.strip():
        raise TxlError("--budget-of needs a memory plan, e.g. --budget-of 'lrm=2@interleave:64,srm=8'")
    for value in (positions, mib):
        if value is not None and not (value >= 0 and math.isfinite(value)):  # nan fails the first test
            raise TxlError(f"the budget must be a finite number >= 0, got {value}")


def resolve_budget(
    model_cfg, spec: EvalSpec, positions: float | None = None, mib: float | None = None, of: str | None = None
) -> tuple[float, str, int | None, int | None]:
    """(limit, unit, long, short) from the budget flags: cached positions, MiB, or the positions of a plan `of`
    (whose longest and shortest lengths then make the reference plans; None: the search's defaults)."""
    check_budget(positions, mib)
    unit, limit = ("mib", mib) if mib is not None else ("positions", positions)
    if of is None:
        return limit, unit, None, None
    check_budget(of=of)
    try:
        lens = parse_plan(of, model_cfg.n_layer, MEMORY)
    except ValueError as err:
        raise TxlError(f"--budget-of: {err}") from None
    return plan_cost(model_cfg, lens, spec.tgt_len, unit, spec.plan), unit, max(lens), min(lens)


def k_best(rise: list[dict], costs: list[dict], limit: float, k: int) -> list[tuple[float, list]]:
    """The k plans within `limit` whose predicted rise (the sum of their layers' rises) is least: a dynamic
    programme over layers whose states are the costs reached, each keeping its k best partial plans (a layer's
    choices are the keys of its `rise`: lengths, or options)."""
    states: dict[float, list[tuple[float, list]]] = {0.0: [(0.0, [])]}
    for layer in range(len(rise)):
        nxt: dict[float, list[tuple[float, list]]] = {}
        for spent, partials in states.items():
            for length, r in rise[layer].items():
                c = round(spent + costs[layer][length], 9)
                if c > limit + 1e-9:
                    continue
                nxt.setdefault(c, []).extend((p + r, lens + [length]) for p, lens in partials)
        states = {c: sorted(v, key=lambda t: t[0])[:k] for c, v in nxt.items()}
    return sorted((t for v in states.values() for t in v), key=lambda t: t[0])[:k]


class _Evaluator:
    """Evaluates plans that differ from the spec's plan in their options (memory lengths, and storage when the
    search chooses it), each once, and remembers them."""

    def __init__(self, model: TransformerXL, corpus: Corpus, spec: EvalSpec, costs: list[dict]):
        self.model, self.corpus, self.spec, self.costs = model, corpus, spec, costs
        self.seen: dict[tuple, Evaluated] = {}

    def cost(self, options) -> float:
        return sum(self.costs[i][o] for i, o in enumerate(options))

    def __call__(self, options, how: str, predicted: float | None = None) -> Evaluated:
        key = tuple(options)
        if key not in self.seen:
            plan = with_options(self.spec.plan, key, name=how)
            out = evaluate(self.model, self.corpus, self.spec, plan)
            reach = budget(plan.apply(self.model.cfg), self.spec.tgt_len).receptive_field[0]
            reach = int(reach) if math.isfinite(reach) else reach
            halves = self.spec.split == "valid" and len(out.blocks["loss"]) >= 2 * MIN_HALF_BLOCKS
            columns = {flag: [o[k] for o in key] for k, flag in enumerate(CHOICES, 1)}
            chosen = {flag: values for flag, values in columns.items() if any(v is not None for v in values)}
            e = Evaluated([o[0] for o in key], self.cost(key), how, out, reach, predicted, plan, halves, chosen)
            self.seen[key] = e
            log.info(f"[{len(self.seen)}] {how:<16} {e.label:<22} cost {e.cost:g}  loss {e.loss:.4f}")
        elif how not in self.seen[key].how.split(", "):
            self.seen[key].how += f", {how}"  # found again another way (a reference plan the search had tried, say)
        return self.seen[key]


def search_plan(
    model: TransformerXL,
    corpus: Corpus,
    spec: EvalSpec,
    limit: float,
    unit: str = "positions",
    lengths: list[int] | None = None,
    confirm: int = 6,
    refine: int = 12,
    long: int | None = None,
    short: int | None = None,
    grids: dict[str, list] | None = None,
) -> Search:
    """Search the memory plan of least validation loss whose cost is at most `limit` (see the module's words).
    `spec.plan` holds the evaluation settings kept for every plan (ranges, same_length, clamp_len, storage), as
    `txl eval` applies them; its memory is what the search replaces, and with `grids` (flag name -> values, of
    CHOICES) those too. The reference plans keep `long` positions in their long-range layers and `short` in the
    others (default: the longest trained memory and an eighth of it), stored as the spec stores them."""
    if unit not in UNITS:
        raise TxlError(f"unknown budget unit {unit!r} (use {', '.join(UNITS)})")
    cfg, trained_lens = model.cfg, list(model.cfg.mem_lens)
    lengths = sorted(set(lengths)) if lengths else default_lengths(trained_lens)
    if any(v < 0 for v in lengths):
        raise TxlError(f"plan lengths must be >= 0, got {lengths}")
    long = max(trained_lens) if long is None else long
    short = (max(1, long // 8) if long else 0) if short is None else short
    grids = {flag: sorted(set(values), key=str) for flag, values in (grids or {}).items() if values}
    grid, as_kept = grid_of(cfg, spec, lengths, grids)
    trained = as_kept(trained_lens)
    extra = {o for v in set(trained_lens) | {long, short} for o in as_kept([v] * cfg.n_layer)}
    run = _Evaluator(
        model, corpus, spec, layer_costs(cfg, sorted(set(grid) | extra, key=str), spec.tgt_len, unit, spec.plan)
    )
    check_affordable(run.costs, grid, limit, UNITS[unit], grids)
    base = run(trained, "as trained")
    rise = _sensitivities(run, trained, grid)
    settings = {"batch_size": spec.batch_size, "max_segments": spec.max_segments, "tgt_len": spec.tgt_len}
    settings.update(lengths=lengths, eval=spec.plan.settings(), **({"grids": texts_of(grids)} if grids else {}))
    search = Search(limit, unit, lengths, base, split=spec.split, settings=settings, grids=grids)
    for predicted, options in k_best(rise, run.costs, limit, confirm):
        run(options, "predicted", base.loss + predicted)
    for name, lens in reference_plans(cfg.n_layer, long, short, lambda lens: run.cost(as_kept(lens)) <= limit + 1e-9):
        add_reference(run, search, as_kept(lens), name)
    costs_of = lambda o: layer_costs(cfg, o, spec.tgt_len, unit, spec.plan)  # noqa: E731
    for d in grids.get("memory_dtype", []):  # what a precision alone buys: the search's gain is stated over these
        references_at(run, search, d, (long, short, lengths), as_kept, costs_of)

    def predict(options) -> float:
        return base.loss + sum(rise[i].get(o, math.inf) for i, o in enumerate(options))

    _refine(run, limit, grid, refine, predict)
    search.best = min((e for e in run.seen.values() if e.cost <= limit + 1e-9), key=lambda e: e.loss)
    search.evaluated = list(run.seen.values())
    return search


def _sensitivities(run: _Evaluator, trained: list, grid: list) -> list[dict]:
    """rise[layer][option]: the loss rise of that one layer's memory set to that option, the others as trained."""
    base = run(trained, "as trained")
    rise = [{trained[i]: 0.0} for i in range(len(trained))]
    for i in range(len(trained)):
        for o in grid:
            if o != trained[i]:
                options = list(trained)
                options[i] = o
                rise[i][o] = run(options, "sensitivity").loss - base.loss
    # the search moves on the grid; a trained option off the grid is only the start
    return [{o: r for o, r in layer.items() if o in grid} for layer in rise]


def _refine(run: _Evaluator, limit: float, grid: list, refine: int, predict) -> None:
    """Local search from the best plan within the budget: move one or two layers at a time, evaluating the moves
    predicted best (three at a time, `refine` at most) while they improve it."""
    best = min((e for e in run.seen.values() if e.cost <= limit + 1e-9), key=lambda e: e.loss)
    n_layer, spent = len(best.mem_lens), 0
    while spent < refine:
        now = list(best.options)
        moves = []
        for i in range(n_layer):
            for a in grid:
                one = now[:i] + [a] + now[i + 1 :]
                moves.append(one)
                for j in range(n_layer):
                    if j != i:
                        moves += [one[:j] + [b] + one[j + 1 :] for b in grid]
        fresh = {tuple(m) for m in moves if tuple(m) not in run.seen and run.cost(m) <= limit + 1e-9}
        if not fresh:
            break
        tried = sorted(fresh, key=lambda m: (predict(m), str(m)))[: min(3, refine - spent)]
        spent += len(tried)
        found = min((run(list(m), "refined", predict(m)) for m in tried), key=lambda e: e.loss)
        if found.loss >= best.loss:
            break
        best = found


def rescore(search_record: dict, model: TransformerXL, corpus: Corpus, spec: EvalSpec) -> Search:
    """A saved search's best plan and references (its JSON record) scored on another split, as a Search of those
    alone: the test split scored once for reporting what the valid split chose."""
    n = model.cfg.n_layer

    def options(r: dict) -> tuple:
        chosen = r.get("chosen") or {}
        columns = [parse_plan(chosen[f], n, CHOICES[f][1]) if f in chosen else [None] * n for f in CHOICES]
        return tuple(option(o) for o in zip(r["mem_lens"], *columns))

    costs = {options(r): r["cost"] for r in search_record["plans"]}

    def score(r: dict) -> Evaluated:
        plan = with_options(spec.plan, options(r), name=r["how"])
        out = evaluate(model, corpus, spec, plan)
        reach = budget(plan.apply(model.cfg), spec.tgt_len).receptive_field[0]
        chosen = {f: list(col) for f, col in zip(CHOICES, list(zip(*options(r)))[1:]) if f in (r.get("chosen") or {})}
        return Evaluated(list(r["mem_lens"]), costs[options(r)], r["how"], out, reach, None, plan, False, chosen)

    rows = search_record["plans"]
    best = score(rows[0])
    is_ref = lambda r: any(h.startswith("lrm=") for h in r["how"].split(", "))  # noqa: E731
    refs = ([best] if is_ref(rows[0]) else []) + [score(r) for r in rows[1:] if is_ref(r)]
    settings = {**search_record.get("settings", {}), "batch_size": spec.batch_size}
    settings.update(max_segments=spec.max_segments, tgt_len=spec.tgt_len)
    budget_, unit, lengths = search_record["budget"], search_record["unit"], search_record["lengths"]
    return Search(budget_, unit, lengths, best, [best, *refs], best, refs, spec.split, settings)
