"""Several processes under torchrun: joining and leaving the process group, and waiting for rank 0.

Under torchrun each process reads its own streams and keeps its own memory; gradients
are averaged by DistributedDataParallel, and rank 0 writes the files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Rank 0 works alone at times (building the token cache, validating, evaluating memory
# plans in a sweep) while the others wait. Those waits go through a CPU (gloo) group
# with a long timeout, so a slow evaluation never trips the NCCL watchdog; the default
# group's own timeout keeps watching the training collectives.
WAIT_TIMEOUT_HOURS = 24.0
_CONTROL = None


def control_group():
    """The CPU group for long waits on rank 0's solo work (created once, by every rank, in the same order)."""
    global _CONTROL
    if _CONTROL is None:
        _CONTROL = dist.new_group(backend="gloo", timeout=timedelta(hours=WAIT_TIMEOUT_HOURS))
    return _CONTROL


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank; safe to use while rank 0 works alone for a long time."""
        if self.world > 1:
            dist.barrier(group=control_group())

    def mean(self, value: float, device: torch.device) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t) / self.world

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank (a stop requested on one stops all, after the same step)."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=control_group())
        return bool(t.item())

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (a list of one without torchrun)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank, through the long-wait group."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=control_group())
        return box[0]


def launched() -> Distributed:
    """This process's place as torchrun describes it in the environment, without joining the process group."""
    env = os.environ
    return Distributed(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))


def setup_distributed(device_name: str) -> Distributed:
    """Join the process group that torchrun describes in the environment (nothing to do for one process)."""
    place = launched()
    world, rank, local = place.world, place.rank, place.local_rank
    if world == 1:
        return Distributed()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        control_group()  # every rank creates it now, in the same order
    return Distributed(rank, world, local)


def finish_distributed(ok: bool) -> None:
    """Leave the process group, all ranks together (the way torch.distributed asks for).

    After a failure on this rank the others may never arrive, so then the group is only
    torn down locally and torchrun stops the rest.
    """
    global _CONTROL
    if not dist.is_initialized():
        return
    if ok and dist.get_world_size() > 1:
        dist.barrier(group=control_group())
    _CONTROL = None
    dist.destroy_process_group()
