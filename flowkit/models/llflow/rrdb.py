"""ESRGAN's residual-in-residual dense blocks (RRDB), the trunk of SRFlow's and LLFlow's encoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RRDB", "ResidualDenseBlock"]


class ResidualDenseBlock(nn.Module):
    r"""Five densely connected 3x3 convolutions with a scaled residual (ESRGAN's ``RDB``).

    Each convolution sees the input and all earlier outputs; the first four add ``growth``
    channels (with LeakyReLU(0.2)). Returns ``x + residual_scale * conv5(...)``; weights start
    small (Kaiming-normal times 0.1), so a fresh block is close to the identity.

    Args:
        channels: input and output channels.
        growth: channels added by each of the first four convolutions.
        residual_scale: factor on the residual branch.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.rrdb import ResidualDenseBlock
        >>> block = ResidualDenseBlock(8, growth=4)
        >>> block(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(self, channels: int, growth: int = 32, residual_scale: float = 0.2) -> None:
        super().__init__()
        if channels < 1 or growth < 1:
            raise ValueError(
                f"ResidualDenseBlock expects positive channels and growth, got {channels} and {growth}"
            )
        self.channels = channels
        self.growth = growth
        self.residual_scale = residual_scale
        self.conv1 = nn.Conv2d(channels, growth, 3, padding=1)
        self.conv2 = nn.Conv2d(channels + growth, growth, 3, padding=1)
        self.conv3 = nn.Conv2d(channels + 2 * growth, growth, 3, padding=1)
        self.conv4 = nn.Conv2d(channels + 3 * growth, growth, 3, padding=1)
        self.conv5 = nn.Conv2d(channels + 4 * growth, channels, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            with torch.no_grad():
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def extra_repr(self) -> str:
        return f"{self.channels}, growth={self.growth}"

    def forward(self, x: Tensor) -> Tensor:
        # Without autograd nothing needs the pre-activation or unscaled tensors, so the activation
        # and the residual update work in place: the same values, a third fewer large allocations
        # (each a round of page faults at LOL sizes on CPU).
        slope = self.lrelu.negative_slope

        def act(t: Tensor) -> Tensor:
            return leaky_relu_when_no_grad_in_place(t, slope)

        x1 = act(self.conv1(x))
        x2 = act(self.conv2(torch.cat([x, x1], dim=1)))
        x3 = act(self.conv3(torch.cat([x, x1, x2], dim=1)))
        x4 = act(self.conv4(torch.cat([x, x1, x2, x3], dim=1)))
        x5 = self.conv5(torch.cat([x, x1, x2, x3, x4], dim=1))
        return _scaled_residual(x5, self.residual_scale, x)


def leaky_relu_when_no_grad_in_place(t: Tensor, slope: float) -> Tensor:
    """LeakyReLU of ``t``, written over ``t`` when autograd is off (nothing needs the input then)."""
    return F.leaky_relu(t, slope, inplace=not torch.is_grad_enabled())


def _scaled_residual(branch: Tensor, scale: float, x: Tensor) -> Tensor:
    if torch.is_grad_enabled():
        return branch * scale + x
    return branch.mul_(scale).add_(x)


class RRDB(nn.Module):
    """Three :class:`ResidualDenseBlock` in a row, wrapped in one more scaled residual (ESRGAN).

    Returns ``x + residual_scale * rdb3(rdb2(rdb1(x)))``, close to the identity when fresh. Stack
    several as the trunk of a conditioning encoder (as SRFlow and LLFlow do).

    Args:
        channels, growth: as for :class:`ResidualDenseBlock`.
        residual_scale: factor on the outer residual branch (the inner blocks keep 0.2).

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.rrdb import RRDB
        >>> RRDB(8, growth=4)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 8, 6, 6])
    """

    def __init__(self, channels: int, growth: int = 32, residual_scale: float = 0.2) -> None:
        super().__init__()
        self.residual_scale = residual_scale
        self.rdb1 = ResidualDenseBlock(channels, growth)
        self.rdb2 = ResidualDenseBlock(channels, growth)
        self.rdb3 = ResidualDenseBlock(channels, growth)

    def forward(self, x: Tensor) -> Tensor:
        return _scaled_residual(self.rdb3(self.rdb2(self.rdb1(x))), self.residual_scale, x)
