"""The memory-cache update: what a layer keeps of [memory; segment], its compressed slots and its sinks."""

from __future__ import annotations

import torch


def evict(mem: torch.Tensor | None, h: torch.Tensor, mem_len: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The layer's next memory, the last `mem_len` positions of [mem; h] (batch-first, no gradient; None for no
    memory), and the states that fall out of it, oldest first (None: none)."""
    cat = h if mem is None or mem.size(1) == 0 else torch.cat([mem, h], dim=1)
    out = cat.size(1) - mem_len
    # what is kept is copied out of the longer [mem; h]: a view would keep all of it alive, beyond the bytes counted
    kept = None if mem_len == 0 else (cat[:, out:].detach().clone() if out > 0 else cat.detach())
    return kept, (cat[:, :out].detach() if out > 0 else None)


def pool_groups(states: torch.Tensor, rate: int, fn: str, conv: torch.nn.Module | None = None) -> torch.Tensor:
    """(B, N, D) evicted states -> (B, ceil(N / rate), D) compressed slots: each `rate` consecutive states pooled by
    mean, max or `conv` (a Conv1d of kernel and stride `rate`). A last group of fewer states (when evictions are
    not a multiple of the rate) is a slot of its own: mean and max pool what it holds, conv repeats its last state."""
    b, n, d = states.shape
    short = -n % rate
    if fn == "conv":
        padded = torch.cat([states, states[:, -1:].expand(b, short, d)], dim=1) if short else states
        return conv(padded.transpose(1, 2)).transpose(1, 2)
    full = n - n % rate
    parts = []
    if full:
        groups = states[:, :full].reshape(b, full // rate, rate, d)
        parts.append(groups.mean(2) if fn == "mean" else groups.amax(2))
    if short:
        tail = states[:, full:]
        parts.append(tail.mean(1, keepdim=True) if fn == "mean" else tail.amax(1, keepdim=True))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def take_sinks(sinks: torch.Tensor | None, h: torch.Tensor, n_sinks: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Attention sinks (StreamingLLM): the layer keeps the first `n_sinks` states of the stream for good.

    Returns the sinks after this segment (the old ones, topped up from the front of `h` until there
    are `n_sinks`; detached) and the rest of `h`, which goes on to the recent memory: a state is a sink
    or in the memory, never both. The memory starts empty with the stream, so the sinks are its first
    states. Keys are then [sinks; memory; segment]: the sinks sit just before the oldest memory, at the
    next distances, as StreamingLLM places them by cache position.
    """
    have = 0 if sinks is None else sinks.size(1)
    need = max(n_sinks - have, 0)
    if need == 0:
        return sinks, h
    head = h[:, :need].detach().clone()  # its own storage: a view would keep the whole segment alive
    return (head if sinks is None else torch.cat([sinks, head], dim=1)), h[:, need:]


def without_sinks(mems: list) -> list:
    """A memory (per chunk, per layer, the cached tensors by name) with every layer's sinks dropped, so the next
    segment's first states become the sinks: in training, sinks that the current weights produced."""
    return [
        None if chunk is None else [{k: v for k, v in layer.items() if not k.startswith("sink")} for layer in chunk]
        for chunk in mems
    ]
