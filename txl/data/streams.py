"""Transformer-XL's ordered iterator: B parallel streams cut into consecutive segments.

The token array is divided into `batch * world` contiguous streams of equal length
(the tail that does not divide evenly is dropped); rank r of a distributed run takes
streams [r * batch, (r + 1) * batch). Segment s holds inputs stream[s : s + L] and
targets stream[s + 1 : s + 1 + L], so consecutive segments continue each stream and
memory carries across them; the last segment is shorter when the stream does not
divide evenly. With `shuffle`, each epoch starts the streams at a different offset
(the array is rotated), so no stream boundary is fixed forever.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from txl.core.errors import TxlError


@dataclass
class Segment:
    inputs: torch.Tensor  # (B, L) int64
    targets: torch.Tensor  # (B, L) int64
    mask: torch.Tensor | None  # (B, L) bool: positions whose target is scored; None scores all
    epoch: int
    index: int  # segment number within the epoch
    start: int  # offset of the segment within each stream


class SegmentStream:
    """Segments of `tgt_len` tokens over `batch` parallel streams, in order."""

    def __init__(
        self,
        tokens: np.ndarray,
        batch: int,
        tgt_len: int,
        mask: np.ndarray | None = None,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        if batch < 1 or tgt_len < 1:
            raise ValueError("batch and tgt_len must be >= 1")
        self.tokens, self.mask = tokens, mask
        self.batch, self.tgt_len = batch, tgt_len
        self.rank, self.world = rank, world
        self.shuffle, self.seed = shuffle, seed
        self.device = torch.device(device)
        self.stream_len = len(tokens) // (batch * world)
        if self.stream_len < 2:
            raise TxlError(
                f"{len(tokens)} tokens cannot make {batch * world} streams of at least 2 tokens; use a smaller batch"
            )

    def __len__(self) -> int:
        """Segments per epoch."""
        return -(-(self.stream_len - 1) // self.tgt_len)

    @property
    def tokens_per_epoch(self) -> int:
        """Target tokens this rank sees in one epoch."""
        return (self.stream_len - 1) * self.batch

    def offset(self, epoch: int) -> int:
        """Where epoch `epoch` starts reading the array (0 without shuffling)."""
        if not self.shuffle:
            return 0
        return int(np.random.default_rng([self.seed, epoch]).integers(0, len(self.tokens)))

    def _streams(self, array: np.ndarray, epoch: int) -> np.ndarray:
        total = self.batch * self.world
        off = self.offset(epoch)
        if off:
            array = np.concatenate([array[off:], array[:off]])
        streams = array[: self.stream_len * total].reshape(total, self.stream_len)
        return streams[self.rank * self.batch : (self.rank + 1) * self.batch]

    def epoch(self, epoch: int = 0, start_index: int = 0) -> Iterator[Segment]:
        """The segments of one epoch, from segment `start_index` (to resume mid-epoch)."""
        streams = self._streams(self.tokens, epoch)
        masks = self._streams(self.mask, epoch) if self.mask is not None else None
        for index in range(start_index, len(self)):
            s = index * self.tgt_len
            n = min(self.tgt_len, self.stream_len - 1 - s)
            block = self._tensor(streams[:, s : s + n + 1])  # targets are the inputs shifted by one
            inputs, targets = block[:, :-1], block[:, 1:]
            mask = None
            if masks is not None:
                mask = self._to_device(torch.from_numpy(np.ascontiguousarray(masks[:, s + 1 : s + 1 + n])))
            yield Segment(inputs, targets, mask, epoch, index, s)

    def forever(self, epoch: int = 0, start_index: int = 0) -> Iterator[Segment]:
        """Epoch after epoch, starting from (epoch, start_index)."""
        while True:
            yield from self.epoch(epoch, start_index)
            epoch, start_index = epoch + 1, 0

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return self._to_device(torch.from_numpy(np.ascontiguousarray(a).astype(np.int64)))

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """To a GPU from pinned memory without waiting: a copy from pageable memory would make the host wait for
        the GPU every step, so it could not queue the next step's work ahead (torch keeps the pinned block alive
        until the copy is done)."""
        if self.device.type != "cuda":
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)
