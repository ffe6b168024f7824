"""Histogram equalization in torch, bit-exact with OpenCV's ``equalizeHist`` on uint8 images."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["equalize_hist", "histeq_image"]


def equalize_hist(image: Tensor) -> Tensor:
    """Equalize each 2-D plane of a uint8 tensor ``(..., H, W)`` as OpenCV's ``equalizeHist`` does.

    With ``h`` the plane's histogram and ``i`` its first non-empty bin,
    ``lut[j] = round(float32(sum_{i<k<=j} h[k]) * float32(255 / (H*W - h[i])))`` for ``j > i``,
    in OpenCV's float32 operations, so the result matches it bit for bit (a constant plane is
    returned as it is).

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.histeq import equalize_hist
        >>> equalize_hist(torch.tensor([[3, 10, 20, 20, 20, 20, 20]], dtype=torch.uint8)).tolist()
        [[0, 42, 255, 255, 255, 255, 255]]
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"equalize_hist expects a torch.Tensor, got {type(image).__name__}")
    if image.dtype != torch.uint8:
        raise TypeError(f"equalize_hist expects a uint8 tensor, got {image.dtype}")
    if image.dim() < 2 or image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ValueError(
            f"equalize_hist expects a non-empty (..., H, W) tensor, got shape {tuple(image.shape)}"
        )
    planes = image.reshape(-1, image.shape[-2] * image.shape[-1]).long()
    total = planes.shape[1]
    hist = torch.zeros(planes.shape[0], 256, dtype=torch.int64, device=image.device)
    hist.scatter_add_(1, planes, torch.ones_like(planes))
    first = (hist > 0).to(torch.uint8).argmax(dim=1, keepdim=True)
    first_count = hist.gather(1, first)
    cumulative = hist.cumsum(dim=1)
    counted = cumulative - cumulative.gather(1, first)  # sum over first < k <= j
    # OpenCV: float scale = 255.f / (total - hist[i]); lut[j] = saturate_cast<uchar>(sum * scale).
    remaining = (total - first_count).clamp_min(1).to(torch.float32)
    scale = torch.tensor(255.0, dtype=torch.float32, device=image.device) / remaining
    lut = torch.round(counted.to(torch.float32) * scale).clamp(0, 255).to(torch.uint8)
    bins = torch.arange(256, device=image.device).unsqueeze(0)
    lut = torch.where(bins <= first, torch.zeros_like(lut), lut)
    constant = first_count == total
    lut = torch.where(constant, first.to(torch.uint8).expand_as(lut), lut)
    return lut.gather(1, planes).to(torch.uint8).reshape(image.shape)


def histeq_image(low: Tensor) -> Tensor:
    """LLFlow's histogram-equalized input: ``equalize_hist(round(low * 255)) / 255`` per channel.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.histeq import histeq_image
        >>> low = torch.tensor([[[[0.0, 0.2], [0.2, 0.4]]]], dtype=torch.float64)
        >>> histeq_image(low)[0, 0] * 255
        tensor([[  0., 170.],
                [170., 255.]], dtype=torch.float64)
    """
    quantized = torch.round(low * 255).clamp(0, 255).to(torch.uint8)
    return equalize_hist(quantized).to(low.dtype) / 255
