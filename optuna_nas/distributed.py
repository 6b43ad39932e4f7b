"""Data-parallel training of one model on several processes (``torch.distributed``), as one Optuna trial.

Started by ``torchrun --nproc-per-node N -m optuna_nas retrain ...``: every process trains a replica on its share
of each global batch (gradients are averaged by DistributedDataParallel), and process 0, the *lead*, alone
touches the Optuna study, reports, decides pruning and writes checkpoints; it shares with the others what they
must agree on (the restored training state, when to stop). The global batch is the settings' batch size, so N
processes compute what one process computes, up to BatchNorm statistics, which are per process on a CPU and
synchronised (``SyncBatchNorm``) on GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import NasError


@dataclass(frozen=True)
class Replicas:
    """This process's place among the data-parallel processes."""

    rank: int
    world: int
    local_rank: int = 0

    @staticmethod
    def from_environment() -> Replicas | None:
        """The processes ``torchrun`` started (``WORLD_SIZE`` > 1), joined into a process group; None alone."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            gpu = torch.cuda.is_available() and local_rank < torch.cuda.device_count()
            if gpu:
                torch.cuda.set_device(local_rank)
            try:
                dist.init_process_group("nccl" if gpu else "gloo")
            except Exception as exc:  # a wrong MASTER_ADDR, a port in use: one line
                raise NasError(f"cannot join the {world} data-parallel processes: {exc}") from None
        return Replicas(rank, world, local_rank)

    @property
    def lead(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str:
        """One GPU per process where there are GPUs, else the CPU."""
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"

    def share(self, value: Any) -> Any:
        """The lead's ``value``, on every process (what the others pass is ignored)."""
        box = [value if self.lead else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def total(self, values: list[float]) -> list[float]:
        """Element-wise sums over the processes."""
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def wrap(self, net: nn.Module, device: torch.device) -> nn.Module:
        """``net`` as a DistributedDataParallel replica (parameters broadcast from the lead)."""
        return nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    def check_batch(self, batch_size: int) -> int:
        """Each process's share of the global batch."""
        if batch_size % self.world:
            raise NasError(f"the batch size {batch_size} does not split over {self.world} processes; use a multiple "
                           f"of {self.world}")
        return batch_size // self.world

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
