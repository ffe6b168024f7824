"""Process-group set-up for ``torchrun``: one process per device, DDP over them."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size and its device.

    The defaults describe a single process on the CPU.

    Args:
        rank: the process's global rank, from 0 to ``world_size - 1`` (default 0).
        world_size: the number of processes in the run (default 1: no process group).
        local_rank: the process's rank on its machine, which is also the index of its GPU
            (default 0).
        device: the device the process computes on (default the CPU).
        launched: started by ``torchrun`` (its environment variables are set), which makes a
            process group even of one process (default ``False``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 (an immutable value)
    launched: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes checkpoints, logs and images."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether this process trains in a process group (so gradients and statistics are all-reduced
        and the model is wrapped in DDP): with more than one process, or alone under ``torchrun``."""
        return self.world_size > 1 or self.launched


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment, or run alone.

    Uses NCCL with one GPU per process when CUDA is available, gloo on CPU.

    The rank, world size and local rank come from ``torchrun``'s ``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK`` environment variables (0, 1 and 0 when they are not set). When they are set the
    default process group is initialised, unless it already is, even for a world size of 1:
    ``torchrun --nproc_per_node 1`` trains with DDP over NCCL on one GPU, the same code path as
    on many (so a one-GPU machine can check it); without them the process runs alone.

    Args:
        device: ``"cuda"`` for the GPU with the local rank's index (made the current CUDA
            device), ``"cpu"``, or another ``torch.device`` string, used as it is; ``None``
            (default) for ``"cuda"`` when CUDA is available and ``"cpu"`` otherwise. The
            backend is NCCL for a CUDA device and gloo for anything else.

    Returns:
        This process's :class:`DistributedContext`.

    Example:
        >>> from flowkit.models.llflow.train.distributed import init_distributed
        >>> init_distributed("cpu").world_size     # not launched by torchrun
        1
    """
    launched = "WORLD_SIZE" in os.environ
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
    if (launched or world_size > 1) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, dev, launched)
