"""Haar-wavelet downsampling: halve the resolution, split each 2x2 block into frequency bands."""

from __future__ import annotations

import math
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor

from flowkit._validation import check_no_cond
from flowkit.core import Flow

__all__ = ["HaarDownsample"]

# Rows: the average, then the horizontal, vertical and diagonal differences of a 2x2 block
# [[a, b], [c, d]] read as (a, b, c, d). Each row has norm 2, so half of it is orthonormal; the
# matrix is symmetric, so it is its own inverse.
_HAAR = 0.5 * torch.tensor(
    [[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]]
)


class HaarDownsample(Flow):
    r"""``(B, C, H, W) -> (B, 4C, H/2, W/2)`` by the 2-D Haar wavelet of every 2x2 block.

    Each block :math:`[a, b; c, d]` of each channel becomes a low-pass and three detail
    coefficients (horizontal, vertical, diagonal), with :math:`s` = ``scale``:

    .. math::

        \begin{bmatrix} y_0 \\ y_1 \\ y_2 \\ y_3 \end{bmatrix} = s Q
        \begin{bmatrix} a \\ b \\ c \\ d \end{bmatrix}, \qquad
        Q = \frac{1}{2} \begin{bmatrix} 1 & 1 & 1 & 1 \\ 1 & -1 & 1 & -1 \\
        1 & 1 & -1 & -1 \\ 1 & -1 & -1 & 1 \end{bmatrix}, \qquad
        \begin{bmatrix} a \\ b \\ c \\ d \end{bmatrix} = \frac{1}{s} Q
        \begin{bmatrix} y_0 \\ y_1 \\ y_2 \\ y_3 \end{bmatrix},

    and :math:`\log|\det J| = C H W \log|s|`. Use it instead of a :class:`~flowkit.layers.Squeeze`
    when a later :class:`~flowkit.layers.Split` should factor out the detail and keep the coarse image.

    Args:
        order: ``"channel"`` (channel ``4c + k`` is band ``k`` of channel ``c``) or ``"band"``
            (channel ``k C + c``: ``y[:, :C]`` is the low-pass image, where ``Split`` keeps it).
        scale: a finite, non-zero factor on every coefficient. ``H`` and ``W`` must be even.

    Example:
        >>> import torch
        >>> from flowkit.layers import HaarDownsample
        >>> x = torch.tensor([[[[1., 3.], [5., 7.]]]])
        >>> y, logdet = HaarDownsample()(x)
        >>> y.flatten().tolist(), logdet.tolist()
        ([8.0, -2.0, -4.0, 0.0], [0.0])
    """

    conditional = False

    def __init__(self, *, order: Literal["channel", "band"] = "channel", scale: float = 1.0) -> None:
        super().__init__()
        if order not in ("channel", "band"):
            raise ValueError(f"HaarDownsample: order must be 'channel' or 'band', got {order!r}")
        if not (math.isfinite(scale) and scale != 0):
            raise ValueError(f"HaarDownsample: scale must be finite and non-zero, got {scale}")
        self.order = order
        self.scale = scale
        self._pattern = "b c k h w -> b (c k) h w" if order == "channel" else "b c k h w -> b (k c) h w"
        self._inverse_pattern = "b (c k) h w -> b c k h w" if order == "channel" else "b (k c) h w -> b c k h w"

    def extra_repr(self) -> str:
        return f"order={self.order!r}, scale={self.scale}"

    def _logdet(self, x: Tensor, sign: float) -> Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        return x.new_full((x.shape[0],), sign * math.prod(x.shape[1:]) * math.log(abs(self.scale)), dtype=dtype)

    def _bands(self, blocks: Tensor, factor: float) -> Tensor:
        haar = (_HAAR * factor).to(device=blocks.device, dtype=blocks.dtype)
        return torch.einsum("kj,bcjhw->bckhw", haar, blocks)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("HaarDownsample", cond)
        if x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"HaarDownsample expects (B, C, H, W) with even H and W, got shape {tuple(x.shape)}")
        blocks = rearrange(x, "b c (h i) (w j) -> b c (i j) h w", i=2, j=2)
        return rearrange(self._bands(blocks, self.scale), self._pattern), self._logdet(x, 1.0)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("HaarDownsample", cond)
        if y.dim() != 4 or y.shape[1] % 4:
            raise ValueError(f"HaarDownsample.inverse expects (B, 4C, H, W), got shape {tuple(y.shape)}")
        blocks = self._bands(rearrange(y, self._inverse_pattern, k=4), 1.0 / self.scale)
        return rearrange(blocks, "b c (i j) h w -> b c (h i) (w j)", i=2, j=2), self._logdet(y, -1.0)
