"""The body of each process in the 2-process DDP test (a module, so spawned children can import it)."""

from __future__ import annotations

import os

import torch


def run(rank: int, world: int, port: int, config_path: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from flowkit.models.llflow.train import load_config as load
    from flowkit.models.llflow.train import trainer

    config = load(config_path)
    captured = {}
    real_checkpoint = trainer._checkpoint

    def keep_model(output, step, model, *args):
        captured["model"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real_checkpoint(output, step, model, *args)

    trainer._checkpoint = keep_model
    trainer.train(config, device="cpu", progress=False)
    torch.save(captured["model"], os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()
