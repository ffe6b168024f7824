"""Fused element-wise ops behind the coupling layers.

``fused_affine`` is the one public primitive; the PyTorch reference in
:mod:`flowkit.kernels.reference` is its specification.
"""

from flowkit.kernels.affine import fused_affine

__all__ = ["fused_affine"]
