"""Invertible layers, one family per module. Each is a :class:`flowkit.Flow`."""

from flowkit.layers.actnorm import ActNorm
from flowkit.layers.autoregressive import MADE, InverseAutoregressive, MaskedAutoregressive
from flowkit.layers.conv1x1 import InvConv1x1
from flowkit.layers.coupling import (
    AdditiveCoupling,
    AffineCoupling,
    CheckerboardCoupling,
    Coupling,
    alternating_mask,
)
from flowkit.layers.haar import HaarDownsample
from flowkit.layers.injector import AffineInjector
from flowkit.layers.logit import Logit
from flowkit.layers.permute import Permute
from flowkit.layers.split import FactorOut, Split
from flowkit.layers.squeeze import Squeeze

__all__ = [
    "MADE",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "AffineInjector",
    "CheckerboardCoupling",
    "Coupling",
    "FactorOut",
    "HaarDownsample",
    "InvConv1x1",
    "InverseAutoregressive",
    "Logit",
    "MaskedAutoregressive",
    "Permute",
    "Split",
    "Squeeze",
    "alternating_mask",
]
