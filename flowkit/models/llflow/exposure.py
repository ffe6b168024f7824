r"""Exposure control for enhanced images: brighter or darker without clipping or colour shifts.

:func:`adjust_exposure` changes the model's choice of exposure by ``stops`` (EV): with gain
:math:`g = 2^{\text{stops}}` and each pixel's value :math:`V = \max(R, G, B)`,

.. math::

    f(V) = \frac{g V}{1 + (g - 1) V}, \qquad
    \text{out}_c = x_c \cdot \frac{f(V)}{V}.

a tone curve of slope :math:`g` at black that fixes 0 and 1: highlights are compressed instead of
clipped, and one factor on all three channels keeps each pixel's hue and saturation.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["adjust_exposure"]


def adjust_exposure(image: Tensor, stops: float) -> Tensor:
    """Brighten (``stops > 0``) or darken (``stops < 0``) RGB images in ``[0, 1]``, keeping hue.

    ``stops`` is the change in EV (+1 about doubles the shadows' brightness; 0 is the identity).

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.exposure import adjust_exposure
        >>> x = torch.tensor([0.2, 0.1, 0.05]).view(3, 1, 1)
        >>> y = adjust_exposure(x, 1.0)
        >>> [round(v, 4) for v in y.flatten().tolist()]  # twice as bright, less the curve's shoulder
        [0.3333, 0.1667, 0.0833]
        >>> torch.allclose(y / y.sum(), x / x.sum())  # the same hue and saturation
        True
    """
    if isinstance(stops, bool) or not isinstance(stops, (int, float)) or not math.isfinite(stops):
        raise ValueError(f"adjust_exposure: stops must be a finite number, got {stops!r}")
    if not isinstance(image, Tensor) or not image.is_floating_point() or image.dim() < 3 or image.shape[-3] != 3:
        got = f"{image.dtype} tensor of shape {tuple(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"adjust_exposure: expected float RGB images (..., 3, H, W), got a {got}")
    if image.numel() and (image.min() < 0 or image.max() > 1):
        raise ValueError(
            f"adjust_exposure: expected values in [0, 1], got [{image.min().item():.4g}, {image.max().item():.4g}]"
        )
    if stops == 0:
        return image.clone()
    gain = 2.0**stops
    value = image.amax(dim=-3, keepdim=True)
    # x f(V) / V = g x / (g V + 1 - V): no division by V (black stays black), and a tensor by
    # tensor division (a scalar over a tensor is a reciprocal and a product, which rounds), so a
    # full-value pixel keeps its colour bit for bit.
    return (image * gain / (gain * value + (1 - value))).clamp_(0.0, 1.0)
