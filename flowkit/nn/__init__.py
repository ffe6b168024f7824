"""Sub-networks used inside flow layers (they need not be invertible)."""

from flowkit.nn.normalization import ActivationNorm
from flowkit.nn.subnets import Conv2dActNorm, ZeroConv2d, ZeroLinear, conv_subnet, mlp_subnet

__all__ = [
    "ActivationNorm",
    "Conv2dActNorm",
    "ZeroConv2d",
    "ZeroLinear",
    "conv_subnet",
    "mlp_subnet",
]
