"""Sub-networks used inside flow layers (they need not be invertible)."""

from flowkit.nn.normalization import ActivationNorm
from flowkit.nn.subnets import MLP, Conv2dActNorm, ZeroConv2d, ZeroLinear, conv_subnet

__all__ = [
    "MLP",
    "ActivationNorm",
    "Conv2dActNorm",
    "ZeroConv2d",
    "ZeroLinear",
    "conv_subnet",
]
