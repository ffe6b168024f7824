"""Process-group set-up for ``torchrun``: one process per device, DDP over them."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 (an immutable value)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes checkpoints, logs and images."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment, or run alone.

    Uses NCCL with one GPU per process when CUDA is available, gloo on CPU.

    Example:
        >>> from flowkit.train.distributed import init_distributed
        >>> init_distributed("cpu").world_size     # not launched by torchrun
        1
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, dev)
