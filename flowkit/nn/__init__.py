"""Sub-networks used inside flow layers (they need not be invertible), and the LPIPS network."""

from flowkit.nn.lpips import LPIPS
from flowkit.nn.rrdb import RRDB, ResidualDenseBlock
from flowkit.nn.subnets import Conv2dActNorm, ZeroConv2d, ZeroLinear, conv_subnet, mlp_subnet

__all__ = [
    "LPIPS",
    "RRDB",
    "Conv2dActNorm",
    "ResidualDenseBlock",
    "ZeroConv2d",
    "ZeroLinear",
    "conv_subnet",
    "mlp_subnet",
]
