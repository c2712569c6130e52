"""The plan language: one per-layer quantity written as text and read back (receptive fields: txl.plan.reach).

A plan gives each layer one value: how many past hidden states it caches
(`mem_len`), how far back a query may attend (`attn_range`), or which attention
variant it uses. The language, for a model of L layers:

    512                      every layer
    24x512                   a run of 24 layers (runs are concatenated: 2x2304,22x128)
    512,512,128,...          an explicit list, one value per layer
    2304@interleave:4,128    4 layers placed evenly get 2304, the rest 128
    lrm=4@interleave:2304,srm=128   the same, in Rae & Razavi's words
    range=128@first:12       attention range 128 in the first 12 layers, unlimited above
    attn=las@first:6,xl      LaS in the first 6 layers, Transformer-XL attention above
                             (the attention kind lives in txl.model.plans, beside the variant names)
    sinks=4@last:2,0         the top 2 layers keep the stream's first 4 states for good (attention sinks)
    compress=16/4:mean@last:2,0   the top 2 layers pool 4 evicted states a slot, up to 16 slots

Placements: `first` (layers 0..k-1), `last` (L-k..L-1) and `interleave`
(layers floor((i+1)L/k)-1 for i < k: evenly spread, always including the top layer).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from txl.config import ConfigError

PLACEMENTS = ("first", "interleave", "last")


class PlanError(ConfigError):
    """A malformed memory, range or attention plan."""


def placement_layers(placement: str, count: int, n_layer: int) -> list[int]:
    """The layer indices that `count` layers at `placement` occupy in a model of `n_layer` layers."""
    if placement == "first":
        return list(range(count))
    if placement == "last":
        return list(range(n_layer - count, n_layer))
    if placement == "interleave":
        return [(i + 1) * n_layer // count - 1 for i in range(count)]
    raise ValueError(placement)


# --------------------------------------------------------------------------- plan kinds

_REQUIRED = object()


def _whole(text: str, what: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise ValueError(f"{what} must be a whole number >= 0, got {text!r}")
    return int(text)


def _parse_range(text: str) -> int | None:
    if text.lower() in ("inf", "none", "all"):
        return None
    return _whole(text, "an attention range (or inf)")


@dataclass(frozen=True)
class PlanKind:
    """How one per-layer quantity is written in a plan."""

    name: str
    keys: tuple[str, ...]  # item prefixes accepted, e.g. `range=`
    parse_value: Callable[[str], Any]
    format_value: Callable[[Any], str]
    default: Any  # for layers no item names; _REQUIRED means every layer must be named


MEMORY = PlanKind("memory", ("mem", "srm"), lambda t: _whole(t, "a memory length"), str, _REQUIRED)
RANGE = PlanKind("range", ("range",), _parse_range, lambda v: "inf" if v is None else str(v), None)
SINKS = PlanKind("sinks", ("sinks",), lambda t: _whole(t, "a number of sinks"), str, 0)
COMPRESS_FNS = ("mean", "max", "conv")


@dataclass(frozen=True)
class Compression:
    """A layer's compressed memory (Rae et al. 2019): up to `length` slots, each pooling `rate` states evicted from
    the memory with `fn` (mean, max, or a learned strided convolution). Written LENGTH/RATE:FN, or 0 for none."""

    length: int = 0
    rate: int = 4
    fn: str = "mean"

    def __str__(self) -> str:
        return f"{self.length}/{self.rate}:{self.fn}" if self.length else "0"


def _parse_compress(text: str) -> Compression:
    if text == "0":
        return Compression()
    m = re.fullmatch(r"(\d+)/(\d+)(?::(\w+))?", text)
    if not m:
        raise ValueError(f"a compressed memory is LENGTH/RATE[:FN], e.g. 16/4:mean, or 0 for none; got {text!r}")
    length, rate, fn = int(m.group(1)), int(m.group(2)), m.group(3) or "mean"
    if rate < 1:
        raise ValueError(f"the compression rate must be >= 1, got {text!r}")
    if fn not in COMPRESS_FNS:
        raise ValueError(f"unknown compression function {fn!r} (use {', '.join(COMPRESS_FNS)})")
    return Compression(length, rate, fn) if length else Compression()


COMPRESS = PlanKind("compressed memory", ("compress",), _parse_compress, str, Compression())


def parse_plan(text: str, n_layer: int, kind: PlanKind = MEMORY) -> list:
    """Expand a plan to one value per layer; a malformed plan raises PlanError naming the problem."""
    try:
        return _parse(text.strip(), n_layer, kind)
    except ValueError as e:
        raise PlanError(f"{kind.name} plan {text!r}: {e}") from None


def _parse(text: str, n_layer: int, kind: PlanKind) -> list:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    items = [item.strip() for item in text.split(",")]
    if not text or any(not item for item in items):
        raise ValueError("has an empty item")
    placed = []  # (value, placement, count)
    seq = []  # (count, value, bare) in the order written: runs NxV, and bare values
    for item in items:
        key, eq, body = item.partition("=")
        if not eq:
            key, body = "", item
        elif kind is MEMORY and key == "lrm":
            count, at, where = body.partition("@")
            placement, colon, length = where.partition(":")
            if not (at and colon):
                raise ValueError(f"{item!r} must look like lrm=COUNT@PLACEMENT:LENGTH, e.g. lrm=4@interleave:2304")
            placed.append((kind.parse_value(length), placement, _whole(count, "a layer count")))
            continue
        elif key not in kind.keys:
            allowed = ("lrm", *kind.keys) if kind is MEMORY else kind.keys
            raise ValueError(f"unknown key {key!r} in {item!r} (use {' or '.join(k + '=' for k in allowed)})")
        if "@" in body and key != "srm":
            value, _, where = body.partition("@")
            placement, colon, count = where.partition(":")
            if not colon:
                raise ValueError(f"{item!r} must look like VALUE@PLACEMENT:COUNT, e.g. 128@first:12")
            placed.append((kind.parse_value(value), placement, _whole(count, "a layer count")))
        elif (m := re.fullmatch(r"(\d+)x(.+)", body)) and key != "srm":
            if int(m.group(1)) == 0:
                raise ValueError(f"{item!r} is a run of no layers")
            seq.append((int(m.group(1)), kind.parse_value(m.group(2)), False))
        else:
            seq.append((1, kind.parse_value(body), True))

    if placed:
        return _place(placed, seq, n_layer, kind)
    if len(seq) == 1 and seq[0][2]:
        return [seq[0][1]] * n_layer
    values = [value for count, value, _ in seq for _ in range(count)]
    if len(values) != n_layer:
        raise ValueError(f"describes {len(values)} layers but the model has {n_layer}")
    return values


def _place(placed: list, seq: list, n_layer: int, kind: PlanKind) -> list:
    """Values placed at first/interleave/last, and one value (or the kind's default) for the other layers."""
    if any(not bare for _, _, bare in seq):
        raise ValueError("mixes runs (NxV) with placements (V@where:count); use one form")
    if len(seq) > 1:
        raise ValueError("gives more than one value for the remaining layers")
    values: list[Any] = [_REQUIRED] * n_layer
    for value, placement, count in placed:
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r} (use {', '.join(PLACEMENTS)})")
        if count > n_layer:
            raise ValueError(f"places {count} layers at {placement!r} but the model has {n_layer} layers")
        for i in placement_layers(placement, count, n_layer):
            if values[i] is not _REQUIRED:
                raise ValueError(f"places layer {i} twice")
            values[i] = value
    rest = seq[0][1] if seq else kind.default
    missing = [i for i, v in enumerate(values) if v is _REQUIRED]
    if missing and rest is _REQUIRED:
        raise ValueError(
            f"leaves {len(missing)} layers without a value: add one for the rest, e.g. ',srm=128' or ',128'"
        )
    return [rest if v is _REQUIRED else v for v in values]


def format_plan(values: Sequence, kind: PlanKind = MEMORY) -> str:
    """The canonical run-length form of a per-layer list, e.g. '3x128,1x2304'; parse_plan inverts it."""
    runs: list[list] = []
    for v in values:
        if runs and runs[-1][1] == v:
            runs[-1][0] += 1
        else:
            runs.append([1, v])
    return ",".join(f"{n}x{kind.format_value(v)}" for n, v in runs)
