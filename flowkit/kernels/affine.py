"""``fused_affine``: the affine coupling math in one op (placeholder dispatch to the reference)."""

from __future__ import annotations

from torch import Tensor

from flowkit.kernels.reference import affine_reference

__all__ = ["fused_affine"]


def fused_affine(
    x: Tensor,
    h: Tensor,
    *,
    eps: float = 1e-4,
    layout: str = "cross",
    inverse: bool = False,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Apply the affine map encoded in ``h`` to ``x``; return ``(y, logdet)``.

    See :func:`flowkit.kernels.reference.affine_reference` for the math.

    Example:
        >>> import torch
        >>> from flowkit.kernels import fused_affine
        >>> x, h = torch.randn(2, 3, 4, 4), torch.zeros(2, 6, 4, 4)
        >>> y, logdet = fused_affine(x, h)
        >>> y.shape, logdet.shape
        (torch.Size([2, 3, 4, 4]), torch.Size([2]))
    """
    return affine_reference(x, h, eps=eps, layout=layout, inverse=inverse)
