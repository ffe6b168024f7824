"""Learning-rate schedule: linear warm-up, then halving at fixed milestones."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["warmup_multistep"]


def warmup_multistep(
    optimizer: torch.optim.Optimizer,
    *,
    warmup: int,
    milestones: Sequence[int],
    gamma: float = 0.5,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR``: ``lr0 * step / warmup`` for ``step < warmup``, then ``lr0 * gamma^k``
    after ``k`` milestones have passed.

    Call ``scheduler.step()`` once per iteration, after ``optimizer.step()``. (The reference's
    trainer stays at ``lr0 * (warmup - 1) / warmup`` after the warm-up; flowkit uses ``lr0``.)

    Each optimizer group's learning rate at creation is its ``lr0``; milestones within the warm-up
    take effect when it ends.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.train.schedule import warmup_multistep
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = warmup_multistep(opt, warmup=2, milestones=[4])
        >>> rates = []
        >>> for _ in range(6):
        ...     rates.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
        >>> rates
        [0.0, 0.5, 1.0, 1.0, 0.5, 0.5]
    """
    milestones = sorted(int(m) for m in milestones)
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0 iterations, got {warmup}")

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        return gamma ** sum(step >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
