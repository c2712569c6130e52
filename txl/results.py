"""The results table of an experiment: one JSON line per result (what was run, its plan and budget, the data,
what it scored), read back whole line by line and appended under the folder's lock."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

from txl.budget import budget
from txl.evaluate import scalars
from txl.io import append_line, read_jsonl
from txl.locks import FolderLock
from txl.plans import describe


def config_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


ROW_FIELDS = ("variant", "seed", "kind", "scale", "config_hash", "plan", "budget", "metrics")


def read_results(path: Path, say: Callable[[str], None] | None = None) -> list[dict]:
    """The whole rows of a results file; each damaged line (not JSON, not an object, a field missing) is
    named through `say` and left out, so one bad line never hides the rest."""
    problems: list[tuple[int, str]] = []
    numbered = read_jsonl(path, on_bad=lambda n, why: problems.append((n, why)), numbered=True)
    rows = []
    for n, row in numbered:
        missing = [f for f in ROW_FIELDS if f not in row]
        if missing:
            problems.append((n, f"lacks {', '.join(missing)}"))
        else:
            rows.append(row)
    if problems and say is not None:
        named = "; ".join(f"line {n} {why}" for n, why in sorted(problems)[:5])
        say(f"{path}: {len(problems)} damaged lines left out ({named})")
    return rows


def result_row(
    exp, variant: str, kind: str, seed: int, digest: str, metrics: dict, model_cfg, tgt_len: int,
    folder: Path, data: dict | None, seconds: float, of: str | None = None, group: str = "",
) -> dict:
    """One line of the results table: what was run (plan, budget, data) and what it scored."""
    b = budget(model_cfg, tgt_len)
    return {
        "experiment": exp.name,
        "scale": exp.scale,
        "variant": variant,
        "kind": kind,
        "of": of,
        "group": group,
        "seed": seed,
        "config_hash": digest,
        "data": data,
        "plan": describe(model_cfg),
        "budget": {
            "cached_positions": b.cached_positions,
            "long_range_positions": b.long_range_positions,
            "memory_bytes": b.bytes,
            "attn_flops_per_token": b.attn_flops_per_token,
            "receptive_field": b.receptive_field[0],
            "params": b.params,
        },
        "metrics": scalars(metrics),
        "loss_by_position": metrics.get("loss_by_position"),
        "blocks": metrics.get("blocks"),
        "run_dir": str(folder),
        "seconds": round(seconds, 1),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def append_result(path: Path, row: dict) -> bool:
    """Append `row` unless a row of the same (variant, seed, config hash) is there; under the folder's lock,
    since another sweep (an overlapping --shard) may have written it meanwhile. True when appended."""
    key = (row["variant"], row["seed"], row["config_hash"])
    with FolderLock(path.parent, wait=120):
        if key in {(r["variant"], r["seed"], r["config_hash"]) for r in read_results(path)}:
            return False
        append_line(path, json.dumps(row))
    return True
