"""Enhancing a large image in overlapping tiles, blended so that no seams show."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["enhance_in_tiles"]


def enhance_in_tiles(
    enhance: Callable[[Tensor, Tensor], Tensor], low: Tensor, histeq: Tensor, tile: int, overlap: int
) -> Tensor:
    """Run ``enhance(low_tile, histeq_tile)`` on overlapping square tiles and blend them linearly.

    Peak memory follows the tile, not the image, while ``histeq`` (of the whole image, cropped
    with each tile) keeps the conditioning the whole image would give.

    Args:
        enhance: enhances one tile given its low-light pixels and its crop of ``histeq``.
        low, histeq: the low-light images ``(B, 3, H, W)`` and their whole-image equalisation.
        tile: the tiles' side in pixels, a multiple of 8 larger than twice ``overlap``.
        overlap: the pixels neighbouring tiles share, over which their weights ramp linearly.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.tiling import enhance_in_tiles
        >>> low = torch.rand(1, 3, 40, 56)
        >>> same = enhance_in_tiles(lambda x, h: x * 2, low, low, tile=24, overlap=8)
        >>> torch.allclose(same, low * 2)   # a pointwise map is unchanged by tiling
        True
    """
    _, _, height, width = low.shape
    if isinstance(tile, bool) or not isinstance(tile, int) or tile % 8 or tile <= 2 * overlap or overlap < 0:
        raise ValueError(f"tile must be a multiple of 8 larger than twice the overlap ({overlap}), got {tile!r}")
    out = torch.zeros_like(low)
    weight = torch.zeros_like(low[:, :1])
    step = tile - overlap
    tops = list(range(0, max(height - tile, 0) + 1, step)) or [0]
    lefts = list(range(0, max(width - tile, 0) + 1, step)) or [0]
    if tops[-1] + tile < height:
        tops.append(height - tile)
    if lefts[-1] + tile < width:
        lefts.append(width - tile)
    for top in tops:
        for left in lefts:
            bottom, right = min(top + tile, height), min(left + tile, width)
            patch = enhance(low[..., top:bottom, left:right], histeq[..., top:bottom, left:right])
            ramp_y = _ramp(bottom - top, overlap, top > 0, bottom < height).to(low)
            ramp_x = _ramp(right - left, overlap, left > 0, right < width).to(low)
            w = ramp_y[:, None] * ramp_x[None, :]
            out[..., top:bottom, left:right] += patch * w
            weight[..., top:bottom, left:right] += w
    return out / weight


def _ramp(size: int, overlap: int, fade_in: bool, fade_out: bool) -> torch.Tensor:
    ramp = torch.ones(size)
    if overlap:
        edge = torch.linspace(0, 1, overlap + 2)[1:-1]
        if fade_in:
            ramp[:overlap] = edge
        if fade_out:
            ramp[-overlap:] = edge.flip(0)
    return ramp
