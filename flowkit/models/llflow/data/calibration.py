r"""Fitting the low-light synthesizer to real low/normal-light pairs, and comparing the two.

:func:`fit_tone` fits the tone curve and colour cast of :func:`~flowkit.models.llflow.data.darken`
to a real pair; :func:`fit_noise` fits its noise levels by simulation (clipping and 8-bit rounding
bend the measured profile at the dark end). :func:`calibrate` does both for several pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit.models.llflow.data.synthetic import LowLightParams, LowLightSynthesizer, darken

__all__ = [
    "Calibration",
    "LowLightStatistics",
    "NoiseProfile",
    "PairFit",
    "ToneFit",
    "calibrate",
    "fit_noise",
    "fit_tone",
    "low_light_statistics",
    "noise_profile",
]

# Intensity bins of the noise profile (fractions of full scale): LOL's low images live below 0.2.
DEFAULT_BINS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 1.0)


def _rgb(name: str, image: object) -> Tensor:
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{name} must be an RGB image tensor of shape (3, H, W), got {shape}")
    if image.dtype == torch.uint8:
        return image.to(torch.float64) / 255
    if not image.is_floating_point():
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got {image.dtype}")
    return image.to(torch.float64)


def _pair(low: object, high: object) -> tuple[Tensor, Tensor]:
    low, high = _rgb("low", low), _rgb("high", high)
    if low.shape != high.shape:
        raise ValueError(f"low and high must have the same shape, got {tuple(low.shape)} and {tuple(high.shape)}")
    return low, high


@dataclass(frozen=True)
class ToneFit:
    """``low_c ≈ scale * gains[c] * high_c ** gamma`` (with ``gains[1] == 1``), fitted on block means.

    Args:
        gamma: exponent of the tone curve.
        scale: the exposure factor ``s``, unbounded (:attr:`PairFit.params` caps it at 1).
        gains: ``(g_R, 1, g_B)``, the colour cast relative to green.

    Example:
        >>> ToneFit(gamma=2.0, scale=0.2, gains=(0.9, 1.0, 1.1)).gains[1]
        1.0
    """

    gamma: float
    scale: float
    gains: tuple[float, float, float]


def fit_tone(low: Tensor, high: Tensor, *, block: int = 8, min_high: float = 0.03) -> ToneFit:
    r"""Fit the tone curve and colour cast that turn ``high`` into ``low`` (least squares in logs).

    Solves :math:`\log L_c = \log s + \log g_c + \gamma \log H_c` on ``block``-averaged images,
    leaving out blocks darker than ``min_high`` in ``high`` or one 8-bit level in ``low``.

    Args:
        low: the low-light image of the pair, (3, H, W), uint8 or float in [0, 1].
        high: its normal-light image, the same shape and kind.
        block: the averaging block size.
        min_high: the darkest normal-light block value used.

    Example:
        >>> import torch
        >>> high = torch.rand(3, 64, 64, dtype=torch.float64) * 0.9 + 0.1
        >>> low = 0.3 * torch.tensor([0.8, 1.0, 1.2]).view(3, 1, 1) * high**2.2
        >>> fit = fit_tone(low, high, block=1)
        >>> round(fit.gamma, 3), round(fit.scale, 3), [round(g, 3) for g in fit.gains]
        (2.2, 0.3, [0.8, 1.0, 1.2])
    """
    low, high = _pair(low, high)
    low_b, high_b = F.avg_pool2d(low[None], block)[0], F.avg_pool2d(high[None], block)[0]
    rows, targets = [], []
    for channel in range(3):
        keep = (high_b[channel] > min_high) & (low_b[channel] > 1 / 255)
        if int(keep.sum()) < 4:
            raise ValueError(
                f"fit_tone: channel {channel} has {int(keep.sum())} usable blocks (need 4); "
                "is low really a darker shot of high?"
            )
        log_high = high_b[channel][keep].log()
        design = torch.zeros(log_high.numel(), 4, dtype=torch.float64)
        design[:, 0] = log_high
        design[:, 1] = 1.0  # log s
        if channel != 1:
            design[:, 2 if channel == 0 else 3] = 1.0  # log g_R or log g_B
        rows.append(design)
        targets.append(low_b[channel][keep].log())
    solution = torch.linalg.lstsq(torch.cat(rows), torch.cat(targets)[:, None]).solution[:, 0]
    gamma, log_scale, log_red, log_blue = solution.tolist()
    return ToneFit(gamma=gamma, scale=math.exp(log_scale), gains=(math.exp(log_red), 1.0, math.exp(log_blue)))


@dataclass(frozen=True)
class NoiseProfile:
    """Noise standard deviation per channel and intensity bin.

    Attributes:
        edges: the bin edges of the low image's local mean; bin ``b`` is ``[edges[b], edges[b + 1])``.
        intensity: (3, bins) float64 mean intensity of each bin's pixels (NaN where empty).
        std: (3, bins) float64 noise standard deviation in each bin (NaN where empty).
        count: (3, bins) int64 number of pixels in each bin, empty ones included.
    """

    edges: tuple[float, ...]
    intensity: Tensor
    std: Tensor
    count: Tensor


def noise_profile(
    low: Tensor, high: Tensor, *, window: int = 5, flat: float = 0.01, edges: Sequence[float] = DEFAULT_BINS,
    min_count: int = 100,
) -> NoiseProfile:
    """Measure the low image's noise where the normal-light image is flat.

    A pixel's noise sample is ``low`` minus its neighbourhood mean, binned by that mean.

    Args:
        low, high: as for :func:`fit_tone`; ``high`` only decides where the scene is flat.
        window: side of the square neighbourhood, odd and at least 3.
        flat: the largest standard deviation of ``high`` over a neighbourhood that counts as flat.
        edges: increasing bin edges in [0, 1] for the neighbourhood mean of ``low``.
        min_count: the fewest flat pixels a bin needs (else it is reported empty, NaN).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> high = torch.full((3, 96, 96), 0.5, dtype=torch.float64)
        >>> low = 0.05 + 0.01 * torch.randn(3, 96, 96, generator=g, dtype=torch.float64)
        >>> profile = noise_profile(low, high)
        >>> bin = 4  # 0.05 falls in [0.05, 0.08)
        >>> abs(profile.std[1, bin].item() - 0.01) < 0.0005
        True
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 3 or window % 2 == 0:
        raise ValueError(f"noise_profile: window must be an odd int >= 3, got {window!r}")
    low, high = _pair(low, high)
    n = window * window
    local_mean = F.avg_pool2d(low[None], window, stride=1)[0]
    high_mean = F.avg_pool2d(high[None], window, stride=1)[0]
    high_var = F.avg_pool2d(high[None] ** 2, window, stride=1)[0] - high_mean**2
    margin = window // 2
    centre = low[:, margin : low.shape[1] - margin, margin : low.shape[2] - margin]
    residual = (centre - local_mean) * math.sqrt(n / (n - 1))
    is_flat = high_var.clamp(min=0).sqrt() < flat
    bins = len(edges) - 1
    intensity = torch.full((3, bins), math.nan, dtype=torch.float64)
    std = torch.full((3, bins), math.nan, dtype=torch.float64)
    count = torch.zeros(3, bins, dtype=torch.int64)
    for channel in range(3):
        for b in range(bins):
            mask = is_flat[channel] & (local_mean[channel] >= edges[b]) & (local_mean[channel] < edges[b + 1])
            count[channel, b] = int(mask.sum())
            if count[channel, b] >= min_count:
                intensity[channel, b] = local_mean[channel][mask].mean()
                std[channel, b] = residual[channel][mask].pow(2).mean().sqrt()
    return NoiseProfile(tuple(float(e) for e in edges), intensity, std, count)


def _profile_distance(simulated: NoiseProfile, real: NoiseProfile) -> Tensor:
    both = torch.isfinite(simulated.std) & torch.isfinite(real.std)
    weight = torch.where(both, real.count.to(torch.float64).sqrt(), torch.zeros((), dtype=torch.float64))
    log_ratio = torch.where(both, (simulated.std / real.std).log(), torch.zeros((), dtype=torch.float64))
    return (weight * log_ratio**2).sum(1) / weight.sum(1).clamp(min=1e-12)


def fit_noise(
    low: Tensor, high: Tensor, tone: ToneFit, *,
    shot_grid: Sequence[float] = (0.0, 1e-4, 3e-4, 1e-3, 3e-3),
    read_grid: Sequence[float] | None = None, seed: int = 0,
) -> tuple[float, tuple[float, float, float]]:
    """Fit Poisson-Gaussian noise levels to a real pair by simulation; returns ``(shot, read per channel)``.

    Every grid combination darkens ``high`` with ``tone`` and compares its :func:`noise_profile`
    with ``low``'s; each channel takes its best read level, and the shot level is shared.

    Args:
        low, high: as for :func:`fit_tone`; ``high`` needs flat regions.
        tone: the pair's :func:`fit_tone`.
        shot_grid: the candidate shot-noise levels ``a``, each >= 0.
        read_grid: the candidate read-noise levels; ``None`` for 24 log-spaced from 1e-3 to 4e-2.
        seed: seed of the simulated noise, the same for every candidate.

    Example:
        >>> import math, torch
        >>> from flowkit.models.llflow.data import LowLightParams, darken
        >>> g = torch.Generator().manual_seed(1)
        >>> high = torch.full((3, 128, 128), 0.6, dtype=torch.float64)
        >>> tone = ToneFit(gamma=2.0, scale=0.3, gains=(1.0, 1.0, 1.0))
        >>> truth = LowLightParams(2.0, 0.3, 0.0, 0.006, noise_ratios=(2.0, 1.0, 1.5))
        >>> low = darken(high, truth, generator=g)
        >>> shot, read = fit_noise(low, high, tone, shot_grid=(0.0,))
        >>> step = 40 ** (1 / 23)  # the ratio between neighbouring read-noise grid values
        >>> [abs(math.log(r / (0.006 * t))) <= math.log(step) for r, t in zip(read, (2.0, 1.0, 1.5))]
        [True, True, True]
    """
    reads = list(read_grid) if read_grid is not None else torch.logspace(-3, math.log10(4e-2), 24).tolist()
    for grid_name, grid in (("shot_grid", list(shot_grid)), ("read_grid", reads)):
        if not grid or not all(math.isfinite(v) and v >= 0 for v in grid):
            raise ValueError(f"fit_noise: {grid_name} must be a non-empty sequence of finite levels >= 0, got {grid}")
    low, high = _pair(low, high)
    real = noise_profile(low, high)
    if not torch.isfinite(real.std).any():
        raise ValueError("fit_noise: the normal-light image has no flat regions to measure noise in")
    best: tuple[float, float, tuple[float, float, float]] | None = None
    for shot in shot_grid:
        scores = torch.empty(len(reads), 3, dtype=torch.float64)
        for i, read in enumerate(reads):
            params = LowLightParams(tone.gamma, min(tone.scale, 1.0), shot, read, gains=tone.gains)
            simulated = darken(high, params, generator=torch.Generator().manual_seed(seed)).double() / 255
            scores[i] = _profile_distance(noise_profile(simulated, high), real)
        channel_best = scores.min(0)
        total = float(channel_best.values.sum())
        if best is None or total < best[0]:
            chosen = tuple(reads[int(i)] for i in channel_best.indices)
            best = (total, shot, chosen)  # type: ignore[assignment]
    assert best is not None
    return best[1], best[2]


@dataclass(frozen=True)
class LowLightStatistics:
    """What the calibration figure compares between real and synthetic low-light images.

    Attributes:
        mean: per-channel mean ``(R, G, B)`` of the low image.
        color_ratios: the low image's ``(mean_R / mean_G, mean_B / mean_G)`` over the normal-light
            image's (1, 1: no colour cast).
        brightness_ratio: the low image's mean over the normal-light image's.
        noise: the pair's :func:`noise_profile`.
    """

    mean: tuple[float, float, float]
    color_ratios: tuple[float, float]
    brightness_ratio: float
    noise: NoiseProfile


def low_light_statistics(low: Tensor, high: Tensor) -> LowLightStatistics:
    """Brightness, colour cast and noise profile of a low-light image relative to its reference.

    ``low`` and ``high`` are as for :func:`fit_tone`.

    Example:
        >>> import torch
        >>> high = torch.full((3, 32, 32), 0.5)
        >>> low = torch.tensor([0.02, 0.04, 0.04]).view(3, 1, 1).expand(3, 32, 32)
        >>> stats = low_light_statistics(low, high)
        >>> [round(v, 3) for v in stats.color_ratios], round(stats.brightness_ratio, 3)
        ([0.5, 1.0], 0.067)
    """
    low, high = _pair(low, high)
    low_mean, high_mean = low.mean((1, 2)), high.mean((1, 2)).clamp(min=1e-6)
    cast = (low_mean / low_mean[1].clamp(min=1e-9)) / (high_mean / high_mean[1])
    return LowLightStatistics(
        mean=tuple(low_mean.tolist()),  # type: ignore[arg-type]
        color_ratios=(float(cast[0]), float(cast[2])),
        brightness_ratio=float(low.mean() / high.mean().clamp(min=1e-6)),
        noise=noise_profile(low, high),
    )


@dataclass(frozen=True)
class PairFit:
    """The fitted degradation of one real pair.

    Args:
        name: the pair's name, as given to :func:`calibrate`.
        tone: its :func:`fit_tone`.
        shot_noise: its shot-noise level ``a`` (:func:`fit_noise`).
        read_noise: its read-noise standard deviation per channel ``(R, G, B)``; green not 0.
    """

    name: str
    tone: ToneFit
    shot_noise: float
    read_noise: tuple[float, float, float]

    @property
    def params(self) -> LowLightParams:
        """The pair's fit as :func:`~flowkit.models.llflow.data.darken` parameters."""
        green = self.read_noise[1]
        return LowLightParams(
            gamma=self.tone.gamma, scale=min(self.tone.scale, 1.0), shot_noise=self.shot_noise, read_noise=green,
            gains=self.tone.gains,
            noise_ratios=(self.read_noise[0] / green, 1.0, self.read_noise[2] / green),
        )


@dataclass(frozen=True)
class Calibration:
    """Per-pair fits and the synthesizer ranges that span them (see :func:`calibrate`).

    Args:
        fits: one :class:`PairFit` per calibrated pair, in the order given.
        widen: the relative margin added on each side of every range (a record only).
        ranges: ``(low, high)`` per :class:`~flowkit.models.llflow.data.LowLightSynthesizer` argument.
    """

    fits: tuple[PairFit, ...]
    widen: float = 0.15
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    """``(low, high)`` per :class:`~flowkit.models.llflow.data.LowLightSynthesizer` argument, spanning the fits."""

    @property
    def synthesizer(self) -> LowLightSynthesizer:
        """A :class:`~flowkit.models.llflow.data.LowLightSynthesizer` drawing from :attr:`ranges`."""
        return LowLightSynthesizer(**self.ranges)


def _span(values: Sequence[float], widen: float, upper: float | None = None) -> tuple[float, float]:
    high = max(values) * (1 + widen)
    return min(values) / (1 + widen), high if upper is None else min(high, upper)


def calibrate(
    pairs: Sequence[tuple[str, Tensor, Tensor]], *, widen: float = 0.15, seed: int = 0
) -> Calibration:
    """Fit every ``(name, low, high)`` pair and derive :class:`~flowkit.models.llflow.data.LowLightSynthesizer` ranges.

    The scale is capped at 1, and the shot-noise range starts at 1e-5 or above.

    Args:
        pairs: at least one ``(name, low, high)``, images as for :func:`fit_tone`.
        widen: the margin on each side: ``[lo, hi]`` becomes ``[lo / (1 + widen), hi * (1 + widen)]``.
        seed: the noise seed of every :func:`fit_noise` simulation.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.data import LowLightParams, darken
        >>> g = torch.Generator().manual_seed(0)
        >>> ramp = torch.linspace(0.2, 0.9, 96, dtype=torch.float64)
        >>> high = torch.stack([ramp.view(1, 96).expand(96, 96), ramp.view(96, 1).expand(96, 96), 1.1 - ramp.view(1, 96).expand(96, 96)])
        >>> high[:, :48, :48] = 0.5  # a flat region to measure noise in
        >>> low = darken(high, LowLightParams(2.0, 0.25, 0.0, 0.005, gains=(0.9, 1.0, 1.1)), generator=g)
        >>> result = calibrate([("a", low, high)], widen=0.0)
        >>> round(result.fits[0].tone.gamma, 1), result.synthesizer.red_gain[0] < 1.0
        (2.0, True)
    """
    if not pairs:
        raise ValueError("calibrate needs at least one (name, low, high) pair")
    fits = []
    for name, low, high in pairs:
        tone = fit_tone(low, high)
        shot, read = fit_noise(low, high, tone, seed=seed)
        fits.append(PairFit(name, tone, shot, read))
    ranges = {
        "gamma": _span([f.tone.gamma for f in fits], widen),
        "scale": _span([f.tone.scale for f in fits], widen, upper=1.0),
        "shot_noise": _span([max(f.shot_noise, 1e-5) for f in fits], widen),
        "read_noise": _span([f.read_noise[1] for f in fits], widen),
        "red_gain": _span([f.tone.gains[0] for f in fits], widen),
        "blue_gain": _span([f.tone.gains[2] for f in fits], widen),
        "red_noise": _span([f.read_noise[0] / f.read_noise[1] for f in fits], widen),
        "blue_noise": _span([f.read_noise[2] / f.read_noise[1] for f in fits], widen),
    }
    return Calibration(tuple(fits), widen, ranges)
