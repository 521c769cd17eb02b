"""One training run on several processes: PyTorch DDP as `torchrun` starts it (NCCL on GPUs, gloo on CPUs).

Every rank builds the same batch plan for every step (a pure function of seed and step) and loads its own share
of it, every `world`-th image; gradients are averaged over the ranks, so a step equals one step of a single
process on the whole global batch -- for losses that are means over images. Two things stay per rank, as in any
DDP run: BatchNorm statistics (SyncBatchNorm needs GPUs) and whatever a loss computes across its batch (a
within-batch ranking, a contrastive matrix) sees only the rank's share. Rank 0 alone evaluates, averages (SWAD,
SMA), checkpoints and writes; at the end of a stage it sends its weights to the others (a stage may end by
restoring its best checkpoint).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes training one run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        """Rank 0: the one that evaluates, checkpoints and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def share(self, plan: list) -> list:
        """This rank's part of a step's global batch: every `world`-th image, starting at its rank."""
        return plan[self.rank :: self.world]

    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Sum every gradient over the ranks and divide by their number: the global batch's mean gradient."""
        if not self.distributed:
            return
        grads = []
        for p in parameters:  # a rank whose share could not be read adds zeros, but takes part
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # one all-reduce, not one per tensor
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, values: dict[str, float] | None, images: int) -> dict[str, float] | None:
        """A step's losses over the global batch, as one process reports them: each rank's values (None when its
        share could not be read) weighted by its number of images. Every rank must call it."""
        if not self.distributed:
            return values
        shares: list = [None] * self.world
        dist.all_gather_object(shares, (values, images))
        counted = [(v, n) for v, n in shares if v is not None and n > 0]
        if not counted:
            return None
        total = sum(n for _, n in counted)
        return {k: sum(v[k] * n for v, n in counted) / total for k in counted[0][0]}

    def broadcast_state(self, module: nn.Module) -> None:
        """Make every rank's weights and buffers rank 0's."""
        if self.distributed:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def on_leader(self, task: Callable[[], T]) -> T:
        """Run `task` on rank 0 alone and give every rank its result; if it fails there, fail on every rank."""
        if not self.distributed:
            return task()
        box: list = [None]
        if self.leader:
            try:
                box[0] = ("ok", task())
            except Exception as e:
                dist.broadcast_object_list([("error", str(e))], src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        outcome, value = box[0]
        if outcome == "error":
            raise ValueError(value)
        return value


SINGLE = Ranks()  # one process: the usual case


def ranks_from_environment() -> Ranks:
    """The ranks torchrun set (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def process_group(ranks: Ranks, device: str) -> Iterator[str]:
    """Join the run's process group for the block (NCCL on CUDA, gloo otherwise); yields this rank's device."""
    if not ranks.distributed:
        yield device
        return
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
        device = f"cuda:{ranks.local_rank}"
    else:
        # Each rank computes on its share of the cores.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world))))
    dist.init_process_group(
        "nccl" if cuda else "gloo", rank=ranks.rank, world_size=ranks.world, timeout=datetime.timedelta(minutes=30)
    )
    try:
        yield device
    finally:
        dist.destroy_process_group()
