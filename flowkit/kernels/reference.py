"""The PyTorch reference of the fused affine op: the specification the kernels are tested against."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["affine_reference", "compute_dtype", "split_shift_scale"]


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the op computes in for input ``x``: float64 for float64, float32 otherwise.

    Args:
        x: the op's input; only its dtype is read (float16 and bfloat16 inputs are computed in
            float32).

    Returns:
        ``torch.float64`` or ``torch.float32``.

    Example:
        >>> import torch
        >>> from flowkit.kernels.reference import compute_dtype
        >>> compute_dtype(torch.zeros(1, dtype=torch.bfloat16))
        torch.float32
        >>> compute_dtype(torch.zeros(1, dtype=torch.float64))
        torch.float64
    """
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def split_shift_scale(h: Tensor, layout: str) -> tuple[Tensor, Tensor]:
    """Views of the shift and the raw scale inside ``h`` (2C channels in dimension 1), no copies.

    ``"cross"``: shift at even channels, raw scale at odd ones (SRFlow/LLFlow's ``split_feature``);
    ``"half"``: the first C channels are the shift, the last C the raw scale.

    Args:
        h: ``(B, 2C, ...)`` shift and raw scale; an odd channel count raises a
            :class:`ValueError`.
        layout: ``"cross"`` or ``"half"``; anything else raises a :class:`ValueError`.

    Returns:
        ``(shift, raw)``, each ``(B, C, ...)`` and a view of ``h``.

    Example:
        >>> import torch
        >>> from flowkit.kernels.reference import split_shift_scale
        >>> h = torch.arange(4.0).view(1, 4)
        >>> split_shift_scale(h, "cross"), split_shift_scale(h, "half")
        ((tensor([[0., 2.]]), tensor([[1., 3.]])), (tensor([[0., 1.]]), tensor([[2., 3.]])))
    """
    if h.shape[1] % 2:
        raise ValueError(f"split_shift_scale expects an even number of channels (shift, scale), got {h.shape[1]}")
    # unbind and split give the same views as strided slices, but their backward builds the
    # gradient of h as one tensor; two slices would each zero-fill an h-sized tensor and add them.
    if layout == "cross":
        shift, raw = h.unflatten(1, (h.shape[1] // 2, 2)).unbind(2)
        return shift, raw
    if layout == "half":
        shift, raw = h.chunk(2, dim=1)
        return shift, raw
    raise ValueError(f"layout must be 'cross' or 'half', got {layout!r}")


def affine_reference(
    x: Tensor, h: Tensor, eps: float = 1e-4, layout: str = "cross", inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """``scale = sigmoid(raw + 2) + eps``; forward ``y = (x + shift) * scale``, inverse ``y / scale - shift``.

    Computed in float32 (float64 for float64 inputs); ``y`` has ``x``'s dtype, and ``logdet``
    (``+sum(log scale)`` forward, ``-sum`` inverse, per sample) is float32 or float64. ``shift`` and
    ``raw`` are the halves of ``h`` given by :func:`split_shift_scale`. Plain PyTorch ops, so
    autograd (to any order) and ``torch.compile`` see through it.

    Args:
        x: ``(B, C, ...)`` input (images ``(B, C, H, W)`` or vectors ``(B, C)``).
        h: ``(B, 2C, ...)`` shift and raw scale, the same batch and spatial sizes as ``x``.
        eps: lower bound added to the sigmoid scale (default ``1e-4``), so the scale lies in
            ``(eps, 1 + eps)``.
        layout: how ``h`` holds the two halves, ``"cross"`` (default) or ``"half"`` (see
            :func:`split_shift_scale`).
        inverse: apply the inverse map (default ``False``).

    Returns:
        ``(y, logdet)``: ``y`` of ``x``'s shape and dtype, and ``logdet`` of shape ``(B,)``.

    Example:
        >>> import math, torch
        >>> from flowkit.kernels.reference import affine_reference
        >>> x, h = torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2, 2)      # shift 0, raw scale 0
        >>> y, logdet = affine_reference(x, h, eps=0.0)
        >>> s = 1 / (1 + math.exp(-2))                                    # sigmoid(0 + 2)
        >>> torch.allclose(y, torch.full_like(x, s))
        True
        >>> math.isclose(logdet.item(), 4 * math.log(s), rel_tol=1e-6)
        True
    """
    compute = compute_dtype(x)
    shift, raw = split_shift_scale(h, layout)
    shift = shift.to(compute)
    scale = torch.sigmoid(raw.to(compute) + 2.0) + eps
    xc = x.to(compute)
    if inverse:
        y = xc / scale - shift
    else:
        y = (xc + shift) * scale
    logdet = torch.log(scale).flatten(1).sum(1)
    return y.to(x.dtype), (-logdet if inverse else logdet)
