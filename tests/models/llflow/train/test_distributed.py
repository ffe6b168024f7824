"""Process-group set-up: alone, or under torchrun, where even one process trains with DDP."""

from __future__ import annotations

import socket

import torch.distributed as dist

from flowkit.models.llflow.train.distributed import init_distributed

TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def test_a_plain_process_runs_alone(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.enabled, ctx.launched, ctx.world_size) == (False, False, 1)
    assert not dist.is_initialized()


def test_torchrun_with_one_process_still_makes_a_process_group(monkeypatch):
    # What `torchrun --nproc_per_node 1` sets: on a GPU this is DDP over NCCL with one rank
    # (benchmarks/gpu_check.sh runs it so); on the CPU, gloo.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in dict(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=str(port)).items():
        monkeypatch.setenv(name, value)
    ctx = init_distributed("cpu")
    try:
        assert (ctx.enabled, ctx.launched, ctx.world_size, ctx.rank) == (True, True, 1, 0)
        assert dist.is_initialized() and dist.get_backend() == "gloo"
    finally:
        dist.destroy_process_group()
