r"""Image quality metrics in torch: PSNR, SSIM, and LLFlow's evaluation protocol, named and explicit.

Every function takes batched images ``(..., 3, H, W)`` (float in [0, 1], or uint8) and returns one
float64 value per image, matching scikit-image to about 1e-12. :func:`reference_metrics` is LLFlow's
published protocol; every number flowkit reports comes from :func:`score_enhancement`. GT-mean
alignment uses the ground truth, so it is never applied silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.models.llflow.data.io import to_uint8
from flowkit.models.llflow.lpips import LPIPS

__all__ = [
    "GRAY_WEIGHTS",
    "SCORE_COLUMNS",
    "gt_mean_align",
    "lpips",
    "psnr",
    "reference_metrics",
    "rgb_to_gray",
    "rgb_to_gray_uint8",
    "score_enhancement",
    "ssim",
    "ssim_columns",
]

GRAY_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "bt601": (0.299, 0.587, 0.114),
    "reference_swapped": (0.114, 0.587, 0.299),
}
"""RGB-to-gray weights by name; BT.601 luma, and the weights LLFlow's ``test.py`` uses in effect
(OpenCV's ``COLOR_BGR2GRAY`` on an RGB array, so red and blue swapped)."""


def _check_pair(
    name: str, pred: Tensor, target: Tensor, *, channels: int | None = 3, min_size: int = 1
) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{name} expects two images of the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if channels is not None and (pred.dim() < 3 or pred.shape[-3] != channels):
        raise ValueError(f"{name} expects images of shape (..., {channels}, H, W), got {tuple(pred.shape)}")
    if pred.dim() < 2 or min(pred.shape[-2:]) < min_size:
        raise ValueError(
            f"{name} expects images at least {min_size}x{min_size} (the window size), got {tuple(pred.shape)}"
        )


def _as_float64(x: Tensor) -> Tensor:
    # uint8 stays on its 0..255 scale, matching the data range inferred for it.
    return x.to(torch.float64)


def _data_range(data_range: float | None, x: Tensor) -> float:
    # Like scikit-image: uint8 images span 0..255 unless told otherwise, float images 0..1.
    if data_range is not None:
        return float(data_range)
    return 255.0 if x.dtype == torch.uint8 else 1.0


def psnr(pred: Tensor, target: Tensor, *, data_range: float | None = None) -> Tensor:
    r"""Peak signal-to-noise ratio per image, :math:`10 \log_{10}(R^2 / \mathrm{MSE})` in dB.

    Identical images give ``inf``. Values are used as given (clamp a raw model output first).

    Args:
        pred: images, shape ``(..., C, H, W)``, float or uint8.
        target: reference images, same shape.
        data_range: ``R`` (default 255 for uint8, else 1).

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.metrics import psnr
        >>> target = torch.zeros(2, 3, 8, 8)
        >>> psnr(target + 0.1, target).round(decimals=6)
        tensor([20., 20.], dtype=torch.float64)
    """
    _check_pair("psnr", pred, target, channels=None)
    if pred.dim() < 3:
        raise ValueError(f"psnr expects images of shape (..., C, H, W), got {tuple(pred.shape)}")
    mse = (_as_float64(pred) - _as_float64(target)).square().flatten(-3).mean(-1)
    return 10 * torch.log10(_data_range(data_range, pred) ** 2 / mse)


def _window_1d(window: str, size: int, sigma: float, device: torch.device) -> Tensor:
    if window == "uniform":
        return torch.full((size,), 1.0 / size, dtype=torch.float64, device=device)
    if window == "gaussian":
        offsets = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
        weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
        return weights / weights.sum()
    raise ValueError(f"window must be 'gaussian' or 'uniform', got {window!r}")


def _ssim_valid_mean(
    x: Tensor,
    y: Tensor,
    rows: Tensor | None,
    cols: Tensor | None,
    *,
    data_range: float,
    cov_norm: float,
    k1: float,
    k2: float,
) -> Tensor:
    n = x.shape[0]
    # Filter the five moments in one pass of a separable, unpadded ("valid") convolution: the
    # valid region is exactly where scikit-image's padded filtering is free of border effects.
    stack = torch.stack([x, y, x * x, y * y, x * y], dim=1).reshape(n * 5, 1, *x.shape[1:])
    if rows is not None:
        stack = F.conv2d(stack, rows.view(1, 1, -1, 1))
    if cols is not None:
        stack = F.conv2d(stack, cols.view(1, 1, 1, -1))
    ux, uy, uxx, uyy, uxy = stack.reshape(n, 5, *stack.shape[2:]).unbind(1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return ssim_map.flatten(1).mean(1)


def ssim(
    pred: Tensor,
    target: Tensor,
    *,
    data_range: float | None = None,
    window: str = "gaussian",
    win_size: int = 11,
    sigma: float = 1.5,
    sample_covariance: bool = False,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    r"""Structural similarity (Wang et al., 2004) per image, averaged over channels.

    The SSIM map's mean where the window fits. The defaults equal scikit-image's
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``; ``window="uniform",
    win_size=7, sample_covariance=True`` is scikit-image's default.

    Args:
        pred: images, shape ``(..., C, H, W)``, float or uint8.
        target: reference images, same shape.
        data_range: the value range (default 255 for uint8, else 1).
        window: ``"gaussian"`` or ``"uniform"``.
        win_size: window width and height (odd).
        sigma: standard deviation of the Gaussian window.
        sample_covariance: scale variances by ``N / (N - 1)``, ``N = win_size**2``.
        k1, k2: the stabilisers ``C1 = (k1 * data_range)**2`` and ``C2 = (k2 * data_range)**2``.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.metrics import ssim
        >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> ssim(x, x)
        tensor([1., 1.], dtype=torch.float64)
        >>> bool(ssim(x, x.flip(-1)).lt(0.2).all())   # unrelated pixels
        True
    """
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd number, got {win_size}")
    _check_pair("ssim", pred, target, channels=None, min_size=win_size)
    if pred.dim() < 3:
        raise ValueError(f"ssim expects images of shape (..., C, H, W), got {tuple(pred.shape)}")
    lead, (height, width) = pred.shape[:-2], pred.shape[-2:]
    x = _as_float64(pred).reshape(-1, height, width)
    y = _as_float64(target).reshape(-1, height, width)
    taps = _window_1d(window, win_size, sigma, x.device)
    count = win_size**2
    cov_norm = count / (count - 1) if sample_covariance else 1.0
    per_channel = _ssim_valid_mean(
        x, y, taps, taps, data_range=_data_range(data_range, pred), cov_norm=cov_norm, k1=k1, k2=k2
    )
    return per_channel.reshape(lead).mean(-1)


def ssim_columns(
    pred: Tensor,
    target: Tensor,
    *,
    data_range: float | None = None,
    win_size: int = 7,
    sample_covariance: bool = True,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    r"""Column-wise 1-D SSIM of single-channel images: scikit-image 0.18's ``multichannel=True`` on 2-D.

    That version reads a 2-D (H, W) image as W one-dimensional "channels" and averages their 1-D
    SSIMs: LLFlow's published SSIM was computed this way. ``pred`` and ``target`` are ``(..., H, W)``;
    the other arguments are as for :func:`ssim`, with a window down each column.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.metrics import ssim_columns
        >>> gray = torch.randint(0, 256, (2, 10, 12), dtype=torch.uint8)
        >>> ssim_columns(gray, gray)
        tensor([1., 1.], dtype=torch.float64)
    """
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd number, got {win_size}")
    if pred.shape != target.shape or pred.dim() < 2 or pred.shape[-2] < win_size:
        raise ValueError(
            f"ssim_columns expects two (..., H, W) images of the same shape with H >= {win_size}, "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    lead, (height, width) = pred.shape[:-2], pred.shape[-2:]
    x = _as_float64(pred).reshape(-1, height, width)
    y = _as_float64(target).reshape(-1, height, width)
    taps = _window_1d("uniform", win_size, 0.0, x.device)
    cov_norm = win_size / (win_size - 1) if sample_covariance else 1.0
    # All columns have the same length, so the mean of per-column means is the mean of the map.
    result = _ssim_valid_mean(
        x, y, taps, None, data_range=_data_range(data_range, pred), cov_norm=cov_norm, k1=k1, k2=k2
    )
    return result.reshape(lead)


def _gray_weights(weights: str | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(weights, str):
        if weights not in GRAY_WEIGHTS:
            raise ValueError(
                f"gray weights must be one of {sorted(GRAY_WEIGHTS)} or 3 numbers, got {weights!r}"
            )
        return GRAY_WEIGHTS[weights]
    values = tuple(float(w) for w in weights)
    if len(values) != 3:
        raise ValueError(f"gray weights must be 3 numbers (R, G, B), got {len(values)}")
    return values  # type: ignore[return-value]


def rgb_to_gray(image: Tensor, *, weights: str | Sequence[float] = "bt601") -> Tensor:
    """Weighted sum of the R, G, B channels, ``(..., 3, H, W) -> (..., H, W)``, in float64.

    ``weights`` is a name in :data:`GRAY_WEIGHTS` or three numbers for R, G, B; a uint8 image gives
    values on the 0-255 scale.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.metrics import rgb_to_gray
        >>> red = torch.zeros(3, 1, 1); red[0] = 1
        >>> rgb_to_gray(red).item(), rgb_to_gray(red, weights="reference_swapped").item()
        (0.299, 0.114)
    """
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(f"rgb_to_gray expects images of shape (..., 3, H, W), got {tuple(image.shape)}")
    w = torch.tensor(_gray_weights(weights), dtype=torch.float64, device=image.device)
    return (image.to(torch.float64) * w.view(3, 1, 1)).sum(-3)


def rgb_to_gray_uint8(image: Tensor) -> Tensor:
    """OpenCV's ``cvtColor(img, COLOR_RGB2GRAY)`` for uint8 RGB, ``(..., 3, H, W) -> (..., H, W)``.

    ``(9798 R + 19235 G + 3735 B + 2**14) >> 15`` (OpenCV 3.4.2+'s fixed point), what LLFlow's
    ``Measure.py`` feeds to SSIM; it can differ by one level from the rounded float luma.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.metrics import rgb_to_gray_uint8
        >>> rgb_to_gray_uint8(torch.tensor([[[255]], [[128]], [[0]]], dtype=torch.uint8))
        tensor([[151]], dtype=torch.uint8)
    """
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(
            f"rgb_to_gray_uint8 expects images of shape (..., 3, H, W), got {tuple(image.shape)}"
        )
    r, g, b = to_uint8(image).to(torch.int32).unbind(-3)
    return ((9798 * r + 19235 * g + 3735 * b + (1 << 14)) >> 15).to(torch.uint8)


def gt_mean_align(pred: Tensor, target: Tensor, *, weights: str | Sequence[float] = "bt601") -> Tensor:
    r"""Scale each prediction so its mean matches the ground truth's gray mean (uses the GT!).

    ``pred * mean(rgb_to_gray(target)) / mean(pred)`` per image, unclamped, as LLFlow's
    ``test.py`` (after KinD). An oracle correction: report it only alongside numbers without it.

    ``weights`` are the target's gray weights (``"reference_swapped"`` reproduces the reference's numbers).

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.metrics import gt_mean_align
        >>> gt = torch.full((1, 3, 4, 4), 0.5)
        >>> gt_mean_align(torch.full((1, 3, 4, 4), 0.25), gt).mean().item()
        0.5
    """
    _check_pair("gt_mean_align", pred, target)
    if not pred.dtype.is_floating_point:
        raise ValueError(f"gt_mean_align expects a float prediction, got dtype {pred.dtype}")
    scale = 255.0 if target.dtype == torch.uint8 else 1.0
    target_mean = rgb_to_gray(target, weights=weights).flatten(-2).mean(-1) / scale
    pred_mean = pred.to(torch.float64).flatten(-3).mean(-1)
    factor = (target_mean / pred_mean).to(pred.dtype)
    return pred * factor[..., None, None, None]


def reference_metrics(
    pred: Tensor,
    target: Tensor,
    *,
    gt_mean: bool = False,
    gt_mean_weights: str | Sequence[float] = "bt601",
) -> dict[str, Tensor]:
    """LLFlow's evaluation protocol (``test.py`` + ``Measure.py``), one value per image and metric.

    Optional :func:`gt_mean_align`; the prediction clamped and *truncated* to uint8, the target
    rounded; then ``"psnr"`` (data range 255), and SSIMs with a 7x7 uniform window and sample
    covariance: ``"ssim_gray"`` of the OpenCV gray images (:func:`rgb_to_gray_uint8`; the
    reference code under scikit-image >= 0.20), ``"ssim_gray_columns"`` of the same through
    :func:`ssim_columns` (under its pinned 0.18: the published SSIM) and ``"ssim_rgb"``.

    ``pred`` is the raw model output; ``gt_mean`` applies :func:`gt_mean_align` first, with
    ``gt_mean_weights``.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.metrics import reference_metrics
        >>> gt = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> sorted(reference_metrics(gt * 0.9, gt, gt_mean=True))
        ['psnr', 'ssim_gray', 'ssim_gray_columns', 'ssim_rgb']
    """
    _check_pair("reference_metrics", pred, target, min_size=7)
    if gt_mean:
        pred = gt_mean_align(pred, target, weights=gt_mean_weights)
    pred_u8 = to_uint8(pred, rounding="truncate")
    target_u8 = to_uint8(target, rounding="round")
    gray_pred, gray_target = rgb_to_gray_uint8(pred_u8), rgb_to_gray_uint8(target_u8)
    skimage_default = {"data_range": 255.0, "window": "uniform", "win_size": 7, "sample_covariance": True}
    return {
        "psnr": psnr(pred_u8, target_u8, data_range=255.0),
        "ssim_gray": ssim(gray_pred.unsqueeze(-3), gray_target.unsqueeze(-3), **skimage_default),
        "ssim_gray_columns": ssim_columns(gray_pred, gray_target, data_range=255.0),
        "ssim_rgb": ssim(pred_u8, target_u8, **skimage_default),
    }


_LPIPS: dict[torch.device, nn.Module] = {}


def lpips(pred: Tensor, target: Tensor) -> Tensor:
    """LPIPS distance (AlexNet, v0.1, as published) per image; lower is more similar.

    Images are at least 32x32. No autograd (use :class:`flowkit.models.llflow.lpips.LPIPS` for a
    differentiable loss).

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.metrics import lpips
        >>> x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
        >>> d = lpips(x, (x + 0.1).clamp(0, 1))
        >>> d.shape, d.dtype, bool((d > 0).all()), lpips(x, x).tolist()
        (torch.Size([2]), torch.float64, True, [0.0, 0.0])
    """
    _check_pair("lpips", pred, target, min_size=32)
    device = pred.device
    if device not in _LPIPS:
        _LPIPS[device] = LPIPS.pretrained().to(device)
    lead = pred.shape[:-3]
    flat_pred, flat_target = pred.reshape(-1, *pred.shape[-3:]), target.reshape(-1, *target.shape[-3:])
    if flat_pred.dtype == torch.uint8:
        flat_pred, flat_target = flat_pred.float() / 255, flat_target.float() / 255
    with torch.no_grad():
        return _LPIPS[device](flat_pred.float(), flat_target.float()).double().reshape(lead)


SCORE_COLUMNS = (
    "psnr", "ssim", "lpips", "gtmean_psnr", "gtmean_ssim", "gtmean_lpips",
    "paper_psnr", "paper_ssim_gray", "paper_gtmean_psnr", "paper_gtmean_ssim_gray",
)
"""The metrics :func:`score_enhancement` returns, in the order reports list them."""


def score_enhancement(output: Tensor, target: Tensor, *, perceptual: bool = True) -> dict[str, Tensor]:
    """Every metric flowkit reports for an enhanced image, from one place.

    ``psnr``, ``ssim`` and ``lpips`` score the 8-bit image a user saves, ``gtmean_*`` the same
    after :func:`gt_mean_align`; ``paper_*`` follow :func:`reference_metrics` (gray SSIM by
    :func:`ssim_columns`; ``paper_gtmean_*`` with the reference's swapped gray weights).

    ``output`` is the model's raw output; ``perceptual`` adds the LPIPS columns (never below 32x32).
    Returns one float64 tensor per column of :data:`SCORE_COLUMNS`.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.metrics import score_enhancement
        >>> gt = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> scores = score_enhancement(gt * 0.5, gt, perceptual=False)
        >>> bool(scores["gtmean_psnr"] > scores["psnr"]), sorted(scores)[:3]
        (True, ['gtmean_psnr', 'gtmean_ssim', 'paper_gtmean_psnr'])
    """
    _check_pair("score_enhancement", output, target, min_size=7)
    if not output.dtype.is_floating_point:
        raise ValueError(f"score_enhancement expects the model's float output, got dtype {output.dtype}")
    target_float = target.to(torch.float64) / 255 if target.dtype == torch.uint8 else target.to(torch.float64)
    saved = to_uint8(output.clamp(0, 1)).to(torch.float64) / 255
    aligned = to_uint8(gt_mean_align(output, target).clamp(0, 1)).to(torch.float64) / 255
    paper = reference_metrics(output, target)
    paper_aligned = reference_metrics(output, target, gt_mean=True, gt_mean_weights="reference_swapped")
    scores = {
        "psnr": psnr(saved, target_float), "ssim": ssim(saved, target_float),
        "gtmean_psnr": psnr(aligned, target_float), "gtmean_ssim": ssim(aligned, target_float),
        "paper_psnr": paper["psnr"], "paper_ssim_gray": paper["ssim_gray_columns"],
        "paper_gtmean_psnr": paper_aligned["psnr"], "paper_gtmean_ssim_gray": paper_aligned["ssim_gray_columns"],
    }
    if perceptual and min(output.shape[-2:]) >= 32:
        scores["lpips"] = lpips(saved.float(), target_float.float()).to(torch.float64)
        scores["gtmean_lpips"] = lpips(aligned.float(), target_float.float()).to(torch.float64)
    return {name: scores[name] for name in SCORE_COLUMNS if name in scores}
