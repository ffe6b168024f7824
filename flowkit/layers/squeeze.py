"""Squeeze: trade spatial resolution for channels (space-to-depth), losslessly."""

from __future__ import annotations

from typing import Literal

from einops import rearrange
from torch import Tensor

from flowkit._validation import check_no_cond
from flowkit.core import Flow, zero_logdet

__all__ = ["Squeeze"]

_PATTERNS = {
    # output channel = c * f*f + i * f + j   (Glow/SRFlow/LLFlow's squeeze2d)
    "channel_major": "b c (h i) (w j) -> b (c i j) h w",
    # output channel = (i * f + j) * C + c   (pixel_unshuffle-like blocks of whole images)
    "spatial_major": "b c (h i) (w j) -> b (i j c) h w",
}
_INVERSE_PATTERNS = {
    "channel_major": "b (c i j) h w -> b c (h i) (w j)",
    "spatial_major": "b (i j c) h w -> b c (h i) (w j)",
}


class Squeeze(Flow):
    r"""Space-to-depth: ``(B, C, H, W) -> (B, C f^2, H/f, W/f)``, volume preserving (logdet 0).

    .. math::

        y_{b,\, k(c, i, j),\, h,\, w} = x_{b,\, c,\, f h + i,\, f w + j}, \qquad
        k(c, i, j) = \begin{cases} c f^2 + i f + j & \text{channel major} \\
        (i f + j) C + c & \text{spatial major} \end{cases}

    Use it before each scale of a multi-scale image flow, so that channel couplings mix
    neighbouring pixels. One ``Squeeze(8)`` is *not* three ``Squeeze(2)``: the channel orders differ.

    Args:
        factor: block size ``f`` (>= 2); ``H`` and ``W`` must be divisible by it.
        order: ``"channel_major"`` (Glow, SRFlow and LLFlow's ``squeeze2d``) or ``"spatial_major"``.

    Example:
        >>> import torch
        >>> from flowkit.layers import Squeeze
        >>> x = torch.arange(16.).view(1, 1, 4, 4)
        >>> y, _ = Squeeze(2)(x)
        >>> y[0, :, 0, 0].tolist()     # the top-left 2x2 block, row by row
        [0.0, 1.0, 4.0, 5.0]
    """

    conditional = False

    def __init__(
        self, factor: int = 2, *, order: Literal["channel_major", "spatial_major"] = "channel_major"
    ) -> None:
        super().__init__()
        if factor < 2:
            raise ValueError(f"Squeeze expects factor >= 2, got {factor}")
        if order not in _PATTERNS:
            raise ValueError(f"Squeeze order must be one of {sorted(_PATTERNS)}, got {order!r}")
        self.factor = factor
        self.order = order

    def extra_repr(self) -> str:
        return f"factor={self.factor}, order={self.order!r}"

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("Squeeze", cond)
        if x.dim() != 4:
            raise ValueError(f"Squeeze expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        f = self.factor
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"Squeeze({f}) expects H and W divisible by {f}, got H={x.shape[2]}, W={x.shape[3]}"
            )
        return rearrange(x, _PATTERNS[self.order], i=f, j=f), zero_logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("Squeeze", cond)
        f = self.factor
        if y.dim() != 4 or y.shape[1] % (f * f):
            raise ValueError(
                f"Squeeze({f}).inverse expects a (B, C*{f * f}, H, W) tensor, got shape {tuple(y.shape)}"
            )
        return rearrange(y, _INVERSE_PATTERNS[self.order], i=f, j=f), zero_logdet(y)
