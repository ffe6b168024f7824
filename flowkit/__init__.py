"""flowkit: normalizing flows for PyTorch.

Invertible layers with exact log-determinants (:mod:`flowkit.layers`, with the element-wise maps
of :mod:`flowkit.transforms`), composed with :class:`Sequential`, turned into density models with
:class:`FlowModel`, and checked with :func:`flowkit.testing.check_flow`; ready-made RealNVP, NSF,
MAF and Glow models are in :mod:`flowkit.recipes`. The flagship model is
:class:`flowkit.models.LLFlow`.
"""

from flowkit import distributions, layers, memory, nn, recipes, testing, transforms
from flowkit.core import Flow, Inverse, Pick, Sequential, WithCond
from flowkit.flow_model import FlowModel

__version__ = "0.1.0"

__all__ = [
    "Flow",
    "FlowModel",
    "Inverse",
    "Pick",
    "Sequential",
    "WithCond",
    "distributions",
    "layers",
    "memory",
    "nn",
    "recipes",
    "testing",
    "transforms",
]
