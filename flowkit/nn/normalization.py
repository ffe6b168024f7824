"""Activation normalisation as a plain module: a per-channel affine map initialised from data."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from flowkit._validation import check_channels, check_finite

__all__ = ["ActivationNorm"]


class ActivationNorm(nn.Module):
    r"""Per-channel ``y = (x + bias) * exp(logs)`` with Glow's data-dependent initialisation.

    On the first call in training mode, ``bias`` and ``logs`` are set from that batch so that ``y``
    has zero mean and standard deviation ``scale`` per channel (statistics in float64, pooled over
    all ranks under ``torch.distributed``). The buffer ``initialized`` records it and is saved in
    ``state_dict``, so loading a checkpoint never re-initialises.

    This is the normalisation inside sub-networks; the flow layer :class:`~flowkit.layers.ActNorm`
    is the same map with its log-determinant and inverse.

    Args:
        channels: number of channels (dimension 1 of the input), at least 1.
        scale: the per-channel standard deviation the initialisation aims for (default 1).

    Example:
        >>> import torch
        >>> from flowkit.nn import ActivationNorm
        >>> norm = ActivationNorm(3)
        >>> y = norm(torch.randn(8, 3, 4, 4) * 5 + 2)   # initialises from this batch
        >>> bool(norm.initialized), round(y.mean().item(), 4) == 0.0
        (True, True)
    """

    initialized: Tensor

    conditional = False

    def __init__(self, channels: int, *, scale: float = 1.0) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"{type(self).__name__} expects a positive channel count, got {channels}")
        self.channels = channels
        self.scale = scale
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        # A Python mirror of the buffer so that, once initialised, forward has no device sync and
        # no data-dependent branch (torch.compile(fullgraph=True) friendly). Reset on load.
        self._known_initialized = False
        self._register_load_state_dict_pre_hook(self._forget_known_state)

    def _forget_known_state(self, *args, **kwargs) -> None:
        self._known_initialized = False

    def extra_repr(self) -> str:
        return f"{self.channels}"

    def _params_for(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, self.channels) + (1,) * (x.dim() - 2)
        return self.bias.view(shape), self.logs.view(shape)

    def initialize_from(self, x: Tensor) -> None:
        """Set ``bias`` and ``logs`` from the finite batch ``x`` and mark the layer initialised.

        Under ``torch.distributed`` every rank must call it (the statistics are pooled).
        """
        if not self._initialize(x):
            raise ValueError(f"{type(self).__name__} initialisation needs at least one value per channel, got a batch of "
                             f"shape {tuple(x.shape)}")

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> bool:
        """:meth:`initialize_from`; False (nothing changed) when no rank's batch holds any value."""
        check_channels(type(self).__name__, x, self.channels)
        check_finite(f"{type(self).__name__} initialisation", x, what="batch")
        dims = [0, *range(2, x.dim())]
        x = x.detach().to(torch.float64)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        # Sums and counts, not per-rank means: ranks may hold batches of different sizes (or none).
        totals = torch.stack([x.sum(dims), torch.full((self.channels,), x.numel() / self.channels,
                                                      dtype=torch.float64, device=x.device)])
        if distributed:
            dist.all_reduce(totals)
        count = totals[1]
        if count[0] == 0:
            return False
        mean = totals[0] / count
        squares = ((x - mean.view(1, -1, *[1] * (x.dim() - 2))) ** 2).sum(dims)
        if distributed:
            dist.all_reduce(squares)
        var = squares / count
        self.bias.copy_((-mean).view_as(self.bias))
        self.logs.copy_(torch.log(self.scale / (var.sqrt() + 1e-6)).view_as(self.logs))
        self.initialized.fill_(True)
        self._known_initialized = True
        return True

    def _maybe_initialize(self, x: Tensor) -> None:
        if self._known_initialized:
            return
        if bool(self.initialized):
            self._known_initialized = True
        elif self.training:
            self._initialize(x)  # an empty batch leaves the layer for the next one to initialise

    def forward(self, x: Tensor) -> Tensor:
        check_channels(type(self).__name__, x, self.channels)
        self._maybe_initialize(x)
        bias, logs = self._params_for(x)
        return (x + bias) * torch.exp(logs)
