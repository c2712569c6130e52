"""Which keys each query may see, in one place.

Keys are [memory; segment]: key j of a layer with `mlen` memory positions is at
distance d = mlen + i - j from query i. A key is visible when 0 <= d <= max_dist.
"""

from __future__ import annotations

import math

import torch


def distances(qlen: int, klen: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(qlen, klen) query-key distances, mlen + i - j, with mlen = klen - qlen."""
    mlen = klen - qlen
    i = torch.arange(qlen, device=device)[:, None]
    j = torch.arange(klen, device=device)[None, :]
    return mlen + i - j


def visible(qlen: int, klen: int, max_dist: float = math.inf, device: torch.device | str | None = None) -> torch.Tensor:
    """(qlen, klen) bool: True where query i may attend to key j (causal, within max_dist)."""
    d = distances(qlen, klen, device)
    keep = d >= 0
    if max_dist < math.inf:
        keep &= d <= max_dist
    return keep


class MaskCache:
    """Masks shared by the layers of one forward pass, keyed by shape and distance limit."""

    def __init__(self, device: torch.device):
        self.device = device
        self._cache: dict[tuple, torch.Tensor] = {}

    def visible(self, qlen: int, klen: int, max_dist: float) -> torch.Tensor:
        key = ("visible", qlen, klen, max_dist)
        if key not in self._cache:
            self._cache[key] = visible(qlen, klen, max_dist, self.device)
        return self._cache[key]

    def distances(self, qlen: int, klen: int) -> torch.Tensor:
        key = ("distances", qlen, klen)
        if key not in self._cache:
            self._cache[key] = distances(qlen, klen, self.device)
        return self._cache[key]
