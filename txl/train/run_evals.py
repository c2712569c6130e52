"""An evaluation kept with its run: the record of what `txl eval` measured (with what it was measured on), the
line above its tables, and the files it is kept in (evals/TIME.json and .md, one line per plan in evals.jsonl)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from txl.core.io import append_line, atomic_write_json, atomic_write_text
from txl.data import Corpus
from txl.evaluation.evaluate import EvalSpec, metric_name, scalars
from txl.train.runs import Trained, run_root


def evaluation_record(trained: Trained, spec: EvalSpec, corpus: Corpus, results: list, command: str | None) -> dict:
    """Everything an evaluation of several plans measured, with what it was measured on: one JSON record."""
    return {
        "checkpoint": str(trained.folder),
        "corpus": corpus.name,
        "data": corpus.identity(),
        "split": spec.split,
        "metric": metric_name(corpus),
        "protocol": spec.protocol.name if spec.protocol else None,
        "unknown_tokens": corpus.unknown.get(spec.split),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": command,
        "results": [r.to_dict() for r in results],
    }


def evaluation_header(trained: Trained, spec: EvalSpec, corpus: Corpus) -> str:
    """The line above an evaluation's tables: which checkpoint, split, how much text, segments and corpus."""
    split = spec.split
    tokens = f"{len(corpus.splits[split]):,} {corpus.unit}s"
    if split == "whole":
        where = f"the whole text ({tokens}: its train, valid and test parts in order)"
    else:
        purpose = "for choosing; report the test split once with --split test" if split == "valid" else "for reporting"
        where = f"{split} split ({tokens}, {purpose})"
    return f"checkpoint {trained.folder}; {where}, segments of {spec.tgt_len}, {corpus.name}"


def record_evaluation(checkpoint: Path, record: dict, markdown: str) -> Path:
    """Keep an evaluation with its run: evals/TIME.json (everything) and .md (the tables), and one line per
    plan in evals.jsonl, the run's own results file (what `txl compare` reads)."""
    root = run_root(checkpoint)
    # unique by construction: the time to the microsecond and the process (evaluations started together each keep
    # their record)
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now % 1 * 1e6):06d}-{os.getpid()}"
    out = root / "evals" / stamp
    atomic_write_json(out.with_suffix(".json"), record)
    atomic_write_text(out.with_suffix(".md"), markdown + "\n")
    for r in record["results"]:
        row = {k: v for k, v in record.items() if k != "results"}
        append_line(root / "evals.jsonl", json.dumps({**row, **scalars(r)}))
    return out
