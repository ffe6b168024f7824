r"""Exposure control for enhanced images: brighter or darker without clipping or colour shifts.

A low-light model picks one exposure for every photograph, and on real photographs it is often
not the one a user wants. :func:`adjust_exposure` changes it afterwards by ``stops`` (EV): with
gain :math:`g = 2^{\text{stops}}` and each pixel's value :math:`V = \max(R, G, B)`, every channel
is multiplied by the same factor

.. math::

    f(V) = \frac{g V}{1 + (g - 1) V}, \qquad
    \text{out}_c = x_c \cdot \frac{f(V)}{V}.

:math:`f` is the rational tone curve that has slope :math:`g` at black and maps 0 to 0 and 1 to 1:
shadows and mid-tones move by about ``stops`` EV while highlights are compressed instead of
clipped (:math:`f(V) \le 1` whenever :math:`V \le 1`). Scaling the three channels by one factor
keeps each pixel's hue and HSV saturation exactly; only its value changes. :math:`f` grows with
:math:`g` for every :math:`0 < V < 1`, so a larger ``stops`` never darkens a pixel, and
``stops=0`` is the identity.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["adjust_exposure"]


def adjust_exposure(image: Tensor, stops: float) -> Tensor:
    """Brighten (``stops > 0``) or darken (``stops < 0``) RGB images in ``[0, 1]``, keeping hue.

    Args:
        image: float RGB images ``(..., 3, H, W)`` with values in ``[0, 1]``.
        stops: the exposure change in EV, a finite number: +1 about doubles the mid-tones' and
            shadows' brightness, -1 about halves it; 0 returns the image unchanged.

    Returns:
        The adjusted images, same shape and dtype, still in ``[0, 1]``.

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
