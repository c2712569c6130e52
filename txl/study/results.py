"""The results table of an experiment: one JSON line per result (what was run, its plan and budget, the data,
what it scored), read back whole line by line and appended under the folder's lock."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txl.core.io import append_line, read_jsonl
from txl.core.locks import FolderLock
from txl.evaluation.evaluate import scalars
from txl.model.budget import budget
from txl.model.plans import describe

log = logging.getLogger(__name__)


def config_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


KINDS = ("train", "eval", "adapt")
ROW_FIELDS = ("variant", "seed", "kind", "scale", "config_hash", "plan", "budget", "metrics")
_NUMBER = (int, float)


class RowError(ValueError):
    """A results line of the wrong shape; the message names the field."""


@dataclass(frozen=True)
class ResultRow:
    """One line of a results table: what was run (variant, seed, plan, budget, data) and what it scored."""

    variant: str
    seed: int
    kind: str  # "train": trained with its plan; "eval": a plan applied to another variant's model; "adapt": another
    # variant's model trained on under the plan for a few steps
    scale: str
    config_hash: str
    plan: dict[str, str]  # memory, range, attn in the plan language
    budget: dict[str, float]  # cached_positions, memory_bytes, receptive_field, ...
    metrics: dict[str, Any]  # loss and the corpus's metrics, split, tokens, ...
    experiment: str = ""
    of: str | None = None
    group: str = ""
    data: dict | None = None
    loss_by_position: list[float] | None = None
    blocks: dict | None = None
    run_dir: str = ""
    seconds: float = 0.0
    time: str = ""
    model: dict | None = None  # the key of the model scored (its run folder's) and of the one the config asks for

    @property
    def split(self) -> str | None:
        return self.metrics.get("split")

    @classmethod
    def from_dict(cls, row: dict) -> ResultRow:
        """A row read back, every field checked for its type; RowError names the first one that is wrong."""
        missing = [f for f in ROW_FIELDS if f not in row]
        if missing:
            raise RowError(f"lacks {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        _check_row(values)
        return cls(**values)

    def to_dict(self) -> dict:
        """The JSON object of the line, its keys in the order the table has always written them."""
        return {k: getattr(self, k) for k in _ORDER}


_ORDER = (
    "experiment", "scale", "variant", "kind", "of", "group", "seed", "config_hash", "data", "plan", "budget",
    "metrics", "loss_by_position", "blocks", "run_dir", "model", "seconds", "time",
)  # fmt: skip


SPLITS = ("train", "valid", "test", "whole")  # what a result may have scored (whole: every split's text in one)


TEXT_METRICS = ("split", "plan")  # what a result's metrics hold as text; everything else is a number


def _number(x: Any) -> bool:
    return isinstance(x, _NUMBER) and not isinstance(x, bool)


def _numbers(x: Any) -> bool:
    return isinstance(x, list) and all(_number(i) for i in x)


def _check_row(v: dict) -> None:
    def need(ok: bool, name: str, what: str) -> None:
        if not ok:
            raise RowError(f"has {name} = {str(v.get(name))[:40]!r}, not {what}")

    for name in ("variant", "scale", "config_hash", "experiment", "group", "run_dir", "time"):
        need(isinstance(v.get(name, ""), str), name, "a string")
    need(isinstance(v["seed"], int) and not isinstance(v["seed"], bool), "seed", "a whole number")
    need(v["kind"] in KINDS, "kind", ", ".join(KINDS))
    need(v.get("of") is None or isinstance(v["of"], str), "of", "a variant name or null")
    plan = v["plan"]
    need(
        isinstance(plan, dict)
        and all(isinstance(plan.get(k), str) for k in ("memory", "range", "attn"))
        and all(isinstance(x, str) for x in plan.values()),
        "plan",
        "an object of plans in the plan language (memory, range, attn, and dtype, sinks, compress where set)",
    )
    b = v["budget"]
    need(
        isinstance(b, dict)
        and all(_number(x) and x >= 0 and (math.isfinite(x) or k == "receptive_field") for k, x in b.items())
        and all(k in b for k in ("cached_positions", "memory_bytes", "receptive_field")),
        "budget",
        "an object of numbers >= 0 (finite but the receptive field) with cached_positions, memory_bytes and "
        "receptive_field",
    )
    need(
        isinstance(v["metrics"], dict)
        and _number(v["metrics"].get("loss", 0.0))
        and all(_number(x) or x is None or (k in TEXT_METRICS and isinstance(x, str)) for k, x in v["metrics"].items()),
        "metrics",
        f"an object of numbers (and {', '.join(TEXT_METRICS)} as text)",
    )
    need(v["metrics"].get("split", "valid") in SPLITS, "metrics", f"an object whose split is {', '.join(SPLITS)}")
    need(v.get("data") is None or isinstance(v["data"], dict), "data", "an object or null")
    blocks = v.get("blocks")
    need(
        blocks is None
        or (
            isinstance(blocks, dict)
            and _numbers(blocks.get("loss"))
            and _numbers(blocks.get("tokens"))
            and len(blocks["loss"]) == len(blocks["tokens"])
        ),
        "blocks",
        "an object of two equally long lists of numbers, loss and tokens, or null",
    )
    need(v.get("loss_by_position") is None or _numbers(v["loss_by_position"]), "loss_by_position", "a list of numbers")
    need(isinstance(v.get("seconds", 0.0), _NUMBER), "seconds", "a number")
    model = v.get("model")
    need(
        model is None or (isinstance(model, dict) and all(isinstance(model.get(k), str) for k in ("key", "asked"))),
        "model",
        "an object of two keys, key and asked, or null",
    )
    if model is not None and model["key"] != model["asked"]:
        raise RowError(f"was scored with model {model['key']}, not the {model['asked']} its configuration asks for")


def shared_runs(rows: list[ResultRow]) -> list[tuple[ResultRow, str]]:
    """Rows a txl before run folders were keyed by configuration wrote with another configuration's model: a
    trained (or adapted) variant's seed scored from one run folder under several configurations (a sweep rerun
    with other settings resumed the first one's model). The first row of each folder and split is its model's;
    each later one is returned with why, to be left out."""
    first: dict[tuple, str] = {}
    out = []
    for r in rows:
        if r.kind == "eval" or not r.run_dir:
            continue
        held = first.setdefault((r.variant, r.seed, r.run_dir, r.split), r.config_hash)
        if held != r.config_hash:
            out.append((r, f"shares its run folder {r.run_dir} with configuration {held}: the scores are its model's"))
    return out


def read_results(path: Path, warn: bool = True) -> list[ResultRow]:
    """The whole rows of a results file, each checked for its shape; each damaged line (not JSON, not an object,
    a field missing or of the wrong type) is left out, and named with its line in a warning unless `warn` is off,
    so one bad line never hides the rest."""
    problems: list[tuple[int, str]] = []
    numbered = read_jsonl(path, on_bad=lambda n, why: problems.append((n, why)), numbered=True)
    rows, lines = [], {}
    for n, row in numbered:
        try:
            rows.append(ResultRow.from_dict(row))
            lines[id(rows[-1])] = n
        except RowError as e:
            problems.append((n, str(e)))
    left = shared_runs(rows)
    problems += [(lines[id(r)], why) for r, why in left]
    rows = [r for r in rows if id(r) not in {id(x) for x, _ in left}]
    if problems and warn:
        named = "; ".join(f"line {n} {why}" for n, why in sorted(problems)[:5])
        log.warning(f"{path}: {len(problems)} damaged lines left out ({named})")
    return rows


def result_row(
    exp,
    variant: str,
    kind: str,
    seed: int,
    digest: str,
    metrics: dict,
    model_cfg,
    tgt_len: int,
    folder: Path,
    data: dict | None,
    seconds: float,
    of: str | None = None,
    group: str = "",
) -> ResultRow:
    """One line of the results table: what was run (plan, budget, data) and what it scored."""
    b = budget(model_cfg, tgt_len)
    return ResultRow(
        experiment=exp.name,
        scale=exp.scale,
        variant=variant,
        kind=kind,
        of=of,
        group=group,
        seed=seed,
        config_hash=digest,
        data=data,
        plan=describe(model_cfg),
        budget={
            "cached_positions": b.cached_positions,
            "long_range_positions": b.long_range_positions,
            "memory_bytes": b.bytes,
            "attn_flops_per_token": b.attn_flops_per_token,
            "receptive_field": b.receptive_field[0],
            "params": b.params,
        },
        metrics=scalars(metrics),
        loss_by_position=metrics.get("loss_by_position"),
        blocks=metrics.get("blocks"),
        run_dir=str(folder),
        seconds=round(seconds, 1),
        time=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def append_result(path: Path, row: ResultRow) -> bool:
    """Append `row` unless a row of the same (variant, seed, config hash) is there; under the folder's lock,
    since another sweep (an overlapping --shard) may have written it meanwhile. True when appended."""
    key = (row.variant, row.seed, row.config_hash)
    with FolderLock(path.parent, wait=120):
        if key in {(r.variant, r.seed, r.config_hash) for r in read_results(path, warn=False)}:
            return False
        append_line(path, json.dumps(row.to_dict()))
    return True
