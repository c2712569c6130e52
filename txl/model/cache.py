"""What a layer carries between segments (`LayerCache`: its recent memory, sinks and compressed slots as stored,
and a variant's recurrent state) and the cache update: what a layer keeps of [memory; segment], its compressed
slots and its sinks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from txl.model.quantize import dequantize, quantize


@dataclass
class Stored:
    """Cached states as a layer stores them (txl.model.quantize): values in its memory dtype, and for the scaled
    dtypes a float32 scale per position."""

    values: torch.Tensor
    scale: torch.Tensor | None = None

    @classmethod
    def of(cls, h: torch.Tensor, dtype: str) -> Stored:
        """(B, M, D) states stored in `dtype` (fp32: `h` itself, which already owns its storage)."""
        q = quantize(h, dtype)
        return cls(q["h"], q.get("h_scale"))

    def read(self, dtype: torch.dtype) -> torch.Tensor:
        """The states as attention reads them: as stored for fp32, else dequantized to `dtype`."""
        if self.scale is None and self.values.dtype == torch.float32:
            return self.values
        return dequantize({"h": self.values, **({"h_scale": self.scale} if self.scale is not None else {})}, dtype)

    @property
    def positions(self) -> int:
        return self.values.size(1)


@dataclass
class LayerCache:
    """What one layer carries to the next segment: its recent memory, its attention sinks and its compressed slots
    (each as stored, or None), and the recurrent state its attention variant keeps (sikf's running sums) by name.
    Keys are [sinks; slots; recent] before the segment, so the attention context is as long as `positions`."""

    recent: Stored | None = None
    sinks: Stored | None = None
    slots: Stored | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    kept: dict[str, Stored] = field(default_factory=dict)  # by registered family (txl.model.dimensions), what it keeps

    PARTS = {"recent": "h", "sinks": "sink", "slots": "c"}  # the names a checkpoint saves each part under
    FAMILY = "kept:"  # a family's states are saved as kept:NAME (and kept:NAME_scale)

    @property
    def positions(self) -> int:
        """Cached positions: what every query of the next segment may see beside the segment."""
        parts = [self.recent, self.sinks, self.slots, *self.kept.values()]
        return sum(part.positions for part in parts if part is not None)

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors by name, as checkpoints have always saved a layer's memory ('h', 'h_scale', 'sink', ...)."""
        out = dict(self.state)
        named = {key: getattr(self, attr) for attr, key in self.PARTS.items()}
        named.update({self.FAMILY + name: part for name, part in self.kept.items()})
        for key, part in named.items():
            if part is not None:
                out[key] = part.values
                if part.scale is not None:
                    out[f"{key}_scale"] = part.scale
        return out

    @classmethod
    def from_dict(cls, flat: dict[str, torch.Tensor]) -> LayerCache:
        """A layer's memory read back from `to_dict`'s form (a checkpoint of this or an earlier txl)."""
        flat = dict(flat)
        parts = {}
        for attr, key in cls.PARTS.items():
            if key in flat:
                parts[attr] = Stored(flat.pop(key), flat.pop(f"{key}_scale", None))
        names = [k[len(cls.FAMILY) :] for k in flat if k.startswith(cls.FAMILY) and not k.endswith("_scale")]
        kept = {n: Stored(flat.pop(cls.FAMILY + n), flat.pop(f"{cls.FAMILY}{n}_scale", None)) for n in names}
        return cls(**parts, state=flat, kept=kept)


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
    """A memory (per chunk, per layer, a LayerCache) with every layer's sinks dropped, so the next segment's first
    states become the sinks: in training, sinks that the current weights produced."""
    return [None if chunk is None else [replace(layer, sinks=None) for layer in chunk] for chunk in mems]
