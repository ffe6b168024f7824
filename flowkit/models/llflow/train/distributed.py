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

    The defaults describe a single process on the CPU; ``local_rank`` is the index of the GPU on
    its machine, and ``launched`` says whether ``torchrun`` started it.
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
        """Whether this process trains in a process group with DDP (several processes, or ``torchrun``)."""
        return self.world_size > 1 or self.launched


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment, or run alone.

    Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) the default process group is
    initialised even for one process, so ``--nproc_per_node 1`` runs the many-GPU code path.

    ``device`` is ``"cuda"`` (the local rank's GPU; NCCL), ``"cpu"`` or another device string
    (gloo); ``None`` for ``"cuda"`` when available.

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
