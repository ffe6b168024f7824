"""The PyTorch reference of the fused affine op: the specification the kernels are tested against."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["affine_reference", "split_shift_scale"]


def split_shift_scale(h: Tensor, layout: str) -> tuple[Tensor, Tensor]:
    """Views of the shift and the raw scale inside ``h`` (2C channels in dimension 1), no copies.

    ``"cross"``: shift at even channels, raw scale at odd ones (SRFlow/LLFlow's ``split_feature``);
    ``"half"``: the first C channels are the shift, the last C the raw scale.
    """
    if layout == "cross":
        return h[:, 0::2], h[:, 1::2]
    if layout == "half":
        c = h.shape[1] // 2
        return h[:, :c], h[:, c:]
    raise ValueError(f"layout must be 'cross' or 'half', got {layout!r}")


def affine_reference(
    x: Tensor, h: Tensor, eps: float = 1e-4, layout: str = "cross", inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """``scale = sigmoid(raw + 2) + eps``; forward ``y = (x + shift) * scale``, inverse ``x = y / scale - shift``.

    Computed in float32 (float64 for float64 inputs); ``y`` has ``x``'s dtype, and ``logdet``
    (``+sum(log scale)`` forward, ``-sum`` inverse, per sample) is float32 or float64.
    """
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
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
