"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage(nn.Module):
    """A shadow copy of ``model`` whose floating-point parameters track
    ``shadow = decay * shadow + (1 - decay) * param`` after every :meth:`update`; buffers are copied.

    Args:
        model: the model to average; ``shadow`` starts as a frozen eval-mode copy of it.
        decay: the old average's weight at each update, in (0, 1), e.g. 0.999.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.train.ema import ExponentialMovingAverage
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> ema = ExponentialMovingAverage(model, decay=0.75)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> ema.update(model)
        >>> ema.shadow.weight.item()   # 0.75 * 0.0 + 0.25 * 1.0
        0.25
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        self.shadow.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow's parameters one step toward ``model``'s (the same architecture) and copy its buffers."""
        params, buffers = list(model.parameters()), list(model.buffers())
        shadow_params, shadow_buffers = list(self.shadow.parameters()), list(self.shadow.buffers())
        if len(params) != len(shadow_params) or len(buffers) != len(shadow_buffers):
            # zip would silently skip the rest: a different model must be an error, not a partial average
            raise ValueError(
                f"ExponentialMovingAverage.update: the model has {len(params)} parameters and {len(buffers)} "
                f"buffers, the average {len(shadow_params)} and {len(shadow_buffers)}: not the model it was made from"
            )
        for shadow, param in zip(shadow_params, params):
            if shadow.is_floating_point():
                shadow.lerp_(param.detach(), 1.0 - self.decay)
        for shadow, buffer in zip(shadow_buffers, buffers):
            shadow.copy_(buffer)
