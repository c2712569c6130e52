"""Receptive fields as arithmetic: how far back each layer lets a query see, and which tokens reach an output.

A layer with memory M and range R lets a query at in-segment index i see distances
0..min(R, M + i) (`max_distance`, with same_length's rules); following every path down
through the layers gives the exact earliest dependency of a position (`earliest_dependency`),
the whole set of tokens it depends on with sinks and compressed slots (`dependencies`), the
steady-state reach by in-segment position (`reach_by_position`), and keys per query for the
budget. The tests hold each to the model token by token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

INF = math.inf

SAME_LENGTH_SHORTFALL = {"tf": 0, "pt": 1}  # how far short of mem_len a same_length window stops


def max_distance(mem_len: int, attn_range: int | None, same_length: bool | str) -> float:
    """The largest query-key distance a layer allows, before counting how much memory is filled.

    same_length: False (off), "tf" (distances 0..mem_len, the original TensorFlow code) or
    "pt" (0..mem_len-1, the original PyTorch code and transformers); True means "tf".
    """
    limit = INF if attn_range is None else attn_range
    if not same_length:
        return limit
    shortfall = SAME_LENGTH_SHORTFALL["tf" if same_length is True else same_length]
    return min(limit, max(mem_len - shortfall, 0))


def _windows(limit: float, idx: np.ndarray, avail: np.ndarray) -> np.ndarray:
    # A query at in-segment index i sees distances 0..min(limit, filled memory + i).
    return (np.minimum(avail + idx, limit) if limit < INF else avail + idx).astype(np.int64)


def earliest_dependency(
    mem_lens: Sequence[int],
    attn_ranges: Sequence[int | None],
    tgt_len: int,
    position: int,
    same_length: bool | str = False,
    unbounded: Sequence[bool] | None = None,
    sinks: Sequence[int] | None = None,
) -> int:
    """The first token whose value can change the top layer's output at `position`.

    Exact for a stream processed segment by segment (segments of `tgt_len`, memory
    starting empty), by following every path down through the layers. A layer marked
    `unbounded` with memory carries a summary of everything before it; a layer with
    `sinks` k sees the stream's first k states besides its window (whose memory then
    holds the states after them).
    """
    unbounded = unbounded or [False] * len(mem_lens)
    sinks = sinks or [0] * len(mem_lens)
    pos = np.arange(position + 1)
    idx = pos % tgt_len
    seg_start = pos - idx
    lo = pos.copy()  # layer 0 (the embedding) at s depends on token s alone
    for m, r, free, k in zip(mem_lens, attn_ranges, unbounded, sinks):
        if free and m > 0:
            lo = np.minimum.accumulate(lo)
            continue
        filled = np.minimum(m, np.maximum(seg_start - k, 0))  # the memory holds states after the sinks
        reach = _windows(max_distance(m, r, same_length), idx, filled)
        left = pos - reach
        lo = np.array([min(lo[a : s + 1].min(), lo[: min(k, s + 1)].min(initial=s)) for a, s in zip(left, pos)])
    return int(lo[position])


def dependencies(
    mem_lens: Sequence[int],
    attn_ranges: Sequence[int | None],
    tgt_len: int,
    position: int,
    same_length: bool | str = False,
    sinks: Sequence[int] | None = None,
    compress: Sequence[tuple[int, int]] | None = None,
) -> list[int]:
    """Every token whose value can change the top layer's output at `position` (not only the earliest): with
    sinks a layer's keys are not one window, so the set has gaps. `compress`: per layer (slots, rate) of a
    compressed memory, each slot depending on the states it pooled, followed group by group as the model forms
    them. Work grows as position^2 per layer."""
    sinks = sinks or [0] * len(mem_lens)
    compress = compress or [(0, 1)] * len(mem_lens)
    pos = np.arange(position + 1)
    seg_start = pos - pos % tgt_len
    dep = np.eye(len(pos), dtype=bool)  # dep[s, t]: token t reaches position s of the layer's input
    for m, r, k, (slots, rate) in zip(mem_lens, attn_ranges, sinks, compress):
        limit = max_distance(m, r, same_length)
        filled = np.minimum(m, np.maximum(seg_start - k, 0))
        lo = seg_start - filled  # the oldest memory position
        s, t = pos[:, None], pos[None, :]
        seen = (t >= lo[:, None]) & (t <= s) & (s - t <= limit)
        seen |= t < np.minimum(k, seg_start)[:, None]  # sinks already kept
        if slots:
            for start in np.unique(seg_start):
                for a, b in compressed_groups(k, m, slots, rate, tgt_len, start // tgt_len):
                    seen[seg_start == start, a:b] = True
        dep = (seen.astype(np.int64) @ dep.astype(np.int64)) > 0
    return [int(t) for t in np.flatnonzero(dep[position])]


def compressed_groups(sinks: int, mem_len: int, slots: int, rate: int, tgt_len: int, segment: int) -> list:
    """The stream positions [a, b) each compressed slot of a layer pools when segment number `segment` starts:
    at the end of each segment the states that fall out of the memory (those after the sinks) are grouped by
    `rate` from the oldest, a last group of fewer states a slot of its own; the newest `slots` are kept."""
    groups: list[tuple[int, int]] = []
    for i in range(segment):
        a, b = max(sinks, i * tgt_len - mem_len), max(sinks, (i + 1) * tgt_len - mem_len)
        groups += [(g, min(g + rate, b)) for g in range(a, b, rate)]
    return groups[-slots:] if slots else []


def reach_by_position(
    mem_lens: Sequence[int],
    attn_ranges: Sequence[int | None],
    tgt_len: int,
    same_length: bool | str = False,
    unbounded: Sequence[bool] | None = None,
) -> np.ndarray:
    """How far back the top layer sees from each in-segment position, once memories are full.

    A layer adds min(attn_range, mem_len + i) to the reach of the layer below, taking
    the best path: a key in memory brings the reach it had in its own segment. Layers
    marked `unbounded` (carried linear-attention state) make the reach infinite.

    Work and memory grow with the segment length and the number of layers, never with the
    memory length: a window longer than a segment need only be searched over its first
    segment's worth of keys (see `_best_key`).
    """
    unbounded = unbounded or [False] * len(mem_lens)
    i = np.arange(tgt_len, dtype=np.int64)
    r = np.zeros(tgt_len, dtype=np.float64)
    for m, rng, free in zip(mem_lens, attn_ranges, unbounded):
        if free and m > 0:
            return np.full(tgt_len, INF)
        d = _windows(max_distance(m, rng, same_length), i, np.full(tgt_len, m, dtype=np.int64))
        r = i + _best_key(r, i - d, i)
    return r


def _best_key(r: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max over key positions s in [lo, hi] of r[s mod T] - s, for each query (positions relative to a segment start).

    f(s) = r[s mod T] - s falls by exactly T from s to s + T, so the best key lies among the
    first T positions of a window. With c = lo mod T and h(k) = r[k mod T] - k over k < 2T,
    the best of s in [lo, lo + L) is max(h[c : c + L]) + c - lo: a range maximum, answered
    from a sparse table of h.
    """
    t = len(r)
    h = np.concatenate([r, r]) - np.arange(2 * t, dtype=np.float64)
    table = [h]
    while 2 ** len(table) <= 2 * t:
        prev, half = table[-1], 2 ** (len(table) - 1)
        table.append(np.maximum(prev[:-half], prev[half:]))
    c = np.mod(lo, t)
    length = np.minimum(hi - lo + 1, t)
    level = np.floor(np.log2(length)).astype(np.int64)
    best = np.empty(len(lo), dtype=np.float64)
    for k in np.unique(level):
        sel = level == k
        a, z = c[sel], c[sel] + length[sel] - 2**k
        best[sel] = np.maximum(table[k][a], table[k][z])
    return best + c - lo


def receptive_field(
    mem_lens: Sequence[int],
    attn_ranges: Sequence[int | None],
    tgt_len: int,
    same_length: bool | str = False,
    unbounded: Sequence[bool] | None = None,
) -> tuple[float, float]:
    """(guaranteed, largest) reach of the top layer over a segment's positions, in tokens.

    The guaranteed reach is never less than sum_l min(attn_range[l], mem_len[l]), and
    equals it with same_length under the tf rule (mem_len[l] - 1 under pt); without it,
    later positions and paths through the end of the previous segment reach further.
    """
    r = reach_by_position(mem_lens, attn_ranges, tgt_len, same_length, unbounded)
    return float(r.min()), float(r.max())


def keys_per_query(mem_len: int, attn_range: int | None, tgt_len: int, same_length: bool | str = False) -> float:
    """Average number of keys a query attends to over a segment, once the memory is full."""
    i = np.arange(tgt_len)
    d = _windows(max_distance(mem_len, attn_range, same_length), i, np.full(tgt_len, mem_len))
    return float((d + 1).mean())
