r"""Synthetic low-light images from normal-light ones: gamma and scale darkening plus sensor noise.

For a normal-light image :math:`x \in [0, 1]` with colour channels :math:`c`, :func:`darken` computes

.. math::

    d_c = \min(1, s \, g_c \, x_c^{\gamma}), \qquad
    y_c = a \cdot \mathrm{Poisson}(d_c / a) + \sigma \rho_c \cdot \mathcal{N}(0, 1), \qquad
    \text{low}_c = \mathrm{round}(255 \cdot \mathrm{clamp}(y_c, 0, 1)) / 255.

a gamma curve and exposure scale (as LOL-v2's synthetic subset), channel gains :math:`g` for a
colour cast, and Poisson-Gaussian sensor noise (Foi et al., 2008) with per-channel read-noise
multipliers :math:`\rho`. :meth:`LowLightSynthesizer.lol` is fitted to real LOL pairs.

References:
    Foi, Trimeche, Katkovnik, Egiazarian. "Practical Poissonian-Gaussian noise modeling and
    fitting for single-image raw-data." IEEE TIP, 2008.

    Yang, Wang, Huang, Wang, Liu. "Sparse Gradient Regularized Deep Retinex Network for Robust
    Low-Light Image Enhancement." IEEE TIP, 2021 (LOL-v2).
"""

from __future__ import annotations

import argparse
import bisect
import csv
import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowkit.models.llflow.data.io import read_image, write_image
from flowkit.models.llflow.data.pairs import DatasetError, ImagePair, image_files
from flowkit.models.llflow.data.scenes import write_scenes

__all__ = ["LowLightMixture", "LowLightParams", "LowLightSynthesizer", "darken", "main", "write_synthetic_pairs"]


@dataclass(frozen=True)
class LowLightParams:
    """The darkening and noise parameters applied to one image (:func:`darken` checks them).

    Attributes:
        gamma: exponent of the gamma curve (> 0; > 1 darkens).
        scale: exposure factor after the gamma curve, in (0, 1].
        shot_noise: ``a``, the shot-noise variance per unit of signal (0 for none).
        read_noise: ``sigma``, the green channel's read-noise standard deviation (0 for none).
        gains: per-channel gains ``(g_R, g_G, g_B)`` > 0, the colour cast (capped at 1 after).
        noise_ratios: per-channel read-noise multipliers ``(rho_R, rho_G, rho_B)`` >= 0.

    Example:
        >>> LowLightParams(gamma=2.0, scale=0.5, shot_noise=0.0, read_noise=0.0).gains
        (1.0, 1.0, 1.0)
    """

    gamma: float
    scale: float
    shot_noise: float
    read_noise: float
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_ratios: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def per_channel(self) -> bool:
        """Whether the gains or noise ratios differ between channels (the image needs 3 channels)."""
        return any(g != 1.0 for g in self.gains) or any(r != 1.0 for r in self.noise_ratios)


def darken(image: Tensor, params: LowLightParams, *, generator: torch.Generator | None = None) -> Tensor:
    """Apply gamma, exposure and colour-cast darkening and Poisson-Gaussian noise, quantised to 8 bit.

    Args:
        image: float in [0, 1] or uint8, (..., H, W); (..., 3, H, W) for per-channel parameters.
        params: the parameters (the module docstring has the formula).
        generator: source of the noise; ``None`` uses torch's global generator.

    Returns:
        A uint8 tensor of the same shape.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.data import LowLightParams, darken
        >>> x = torch.full((3, 2, 2), 0.5)
        >>> darken(x, LowLightParams(gamma=2.0, scale=0.4, shot_noise=0.0, read_noise=0.0))[0, 0, 0]
        tensor(26, dtype=torch.uint8)
        >>> cast = LowLightParams(gamma=2.0, scale=0.4, shot_noise=0.0, read_noise=0.0, gains=(0.5, 1.0, 1.0))
        >>> darken(x, cast)[:, 0, 0].tolist()
        [13, 26, 26]
    """
    if params.gamma <= 0 or not 0 < params.scale <= 1 or params.shot_noise < 0 or params.read_noise < 0:
        raise ValueError(f"expected gamma > 0, 0 < scale <= 1 and non-negative noise levels, got {params}")
    if len(params.gains) != 3 or len(params.noise_ratios) != 3 or min(params.gains) <= 0 \
            or min(params.noise_ratios) < 0:
        raise ValueError(f"expected 3 positive gains and 3 non-negative noise ratios, got {params}")
    if params.per_channel and (image.dim() < 3 or image.shape[-3] != 3):
        raise ValueError(
            f"per-channel gains or noise ratios need RGB images of shape (..., 3, H, W), got {tuple(image.shape)}"
        )
    if image.dtype == torch.uint8:
        x = image.to(torch.float64) / 255
    elif image.dtype.is_floating_point:
        x = image.to(torch.float64).clamp(0, 1)
    else:
        raise ValueError(f"darken expects a float image in [0, 1] or uint8, got dtype {image.dtype}")
    dark = params.scale * x**params.gamma
    read_std: Tensor | float = params.read_noise
    if params.per_channel:
        gains = torch.tensor(params.gains, dtype=torch.float64).view(3, 1, 1)
        dark = (dark * gains).clamp(max=1.0)
        read_std = params.read_noise * torch.tensor(params.noise_ratios, dtype=torch.float64).view(3, 1, 1)
    if params.shot_noise > 0 or params.read_noise > 0:
        dark = _add_noise(dark, params.shot_noise, read_std, generator)
    return torch.round(dark.clamp(0, 1) * 255).to(torch.uint8)


# Above this many expected photons a Poisson count is drawn from its normal approximation
# N(lam, lam): the two distributions then differ by under 2% in total variation (falling as
# 1/sqrt(lam)) while torch.poisson's exact sampler costs ~30 ms per 0.5-megapixel image.
_NORMAL_APPROXIMATION_FROM = 64.0


def _add_noise(dark: Tensor, shot: float, read_std: Tensor | float, generator: torch.Generator | None) -> Tensor:
    """``shot * Poisson(dark / shot) + read_std * N(0, 1)``, one normal draw per pixel."""
    # Drawn in float32 (five times faster than float64 on CPU), used in float64.
    noise = torch.randn(dark.shape, generator=generator, dtype=torch.float32).to(dark.dtype)
    if shot == 0:
        return dark + read_std * noise
    expected = dark / shot
    exact = expected < _NORMAL_APPROXIMATION_FROM
    read_var = torch.as_tensor(read_std, dtype=dark.dtype) ** 2
    approximate_std = (shot * dark + read_var).sqrt()
    result = dark + approximate_std * noise
    if bool(exact.any()):
        read = torch.as_tensor(read_std, dtype=dark.dtype).expand_as(dark)[exact]
        counts = torch.poisson(expected[exact], generator=generator)
        result[exact] = shot * counts + read * noise[exact]
    return result


def _log_uniform(generator: torch.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    if low == high:
        return low
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _uniform(generator: torch.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


@dataclass(frozen=True)
class LowLightSynthesizer:
    """Random low-light degradation: draws :class:`LowLightParams` per image and applies :func:`darken`.

    Every field is a range ``(low, high)``, ``0 < low <= high``, of a :class:`LowLightParams` value
    (the gains and noise multipliers relative to green); ``gamma`` and ``scale`` (at most 1) are
    drawn uniformly, the others log-uniformly. The defaults have no colour cast; :meth:`lol` and
    :meth:`lol_wide` are fitted to real pairs.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.data import LowLightSynthesizer
        >>> synth = LowLightSynthesizer()
        >>> x = torch.rand(3, 16, 16)
        >>> low, params = synth(x, seed=3)
        >>> torch.equal(low, synth(x, seed=3)[0]), low.dtype, low.float().mean() < x.mean() * 255
        (True, torch.uint8, tensor(True))
    """

    gamma: tuple[float, float] = (1.8, 3.0)
    scale: tuple[float, float] = (0.15, 0.5)
    shot_noise: tuple[float, float] = (2e-4, 4e-3)
    read_noise: tuple[float, float] = (1e-3, 8e-3)
    red_gain: tuple[float, float] = (1.0, 1.0)
    blue_gain: tuple[float, float] = (1.0, 1.0)
    red_noise: tuple[float, float] = (1.0, 1.0)
    blue_noise: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("gamma", "scale", "shot_noise", "read_noise", "red_gain", "blue_gain", "red_noise",
                     "blue_noise"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ValueError(
                    f"{name} must be a range (low, high) with 0 < low <= high, got {value!r}"
                )
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        if self.scale[1] > 1:
            raise ValueError(f"scale must stay within (0, 1], got {self.scale}")

    @classmethod
    def lol(cls) -> LowLightSynthesizer:
        """Ranges spanning :func:`~flowkit.models.llflow.data.calibration.calibrate`'s fits of four real
        LOL pairs (eval15 #778 and our485 #697, #717, #776), widened by about 15%.

        Example:
            >>> from flowkit.models.llflow.data import LowLightSynthesizer
            >>> LowLightSynthesizer.lol().red_noise[0] > 1.0  # red is noisier than green in LOL
            True
        """
        return cls(**LOL_FIT)

    @classmethod
    def lol_wide(cls) -> LowLightSynthesizer:
        """:meth:`lol`'s ranges with exposures reaching as dark as real low-light datasets do.

        A model trained on :meth:`lol` under-brightens darker inputs such as LOL-v2's
        (:ref:`measured-design-choices`).

        Example:
            >>> from flowkit.models.llflow.data import LowLightSynthesizer
            >>> LowLightSynthesizer.lol_wide().scale[0] < LowLightSynthesizer.lol().scale[0]
            True
        """
        return cls(**LOL_WIDE)

    def sample_params(self, generator: torch.Generator) -> LowLightParams:
        """Draw one image's parameters from the CPU ``generator``, in the fields' order.

        Example:
            >>> import torch
            >>> p = LowLightSynthesizer().sample_params(torch.Generator().manual_seed(0))
            >>> 1.8 <= p.gamma <= 3.0 and 0.15 <= p.scale <= 0.5
            True
        """
        gamma = _uniform(generator, self.gamma)
        scale = _uniform(generator, self.scale)
        shot_noise = _log_uniform(generator, self.shot_noise)
        read_noise = _log_uniform(generator, self.read_noise)
        # Drawn after the four above, so that seeds keep their meaning for the original ranges.
        red_gain, blue_gain = _log_uniform(generator, self.red_gain), _log_uniform(generator, self.blue_gain)
        red_noise, blue_noise = _log_uniform(generator, self.red_noise), _log_uniform(generator, self.blue_noise)
        return LowLightParams(
            gamma=gamma, scale=scale, shot_noise=shot_noise, read_noise=read_noise,
            gains=(red_gain, 1.0, blue_gain), noise_ratios=(red_noise, 1.0, blue_noise),
        )

    def __call__(
        self, image: Tensor, *, seed: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, LowLightParams]:
        """Darken ``image`` with freshly drawn parameters; return the uint8 result and them.

        Args:
            image: as for :func:`darken`.
            seed: seeds a new generator (exclusive with ``generator``).
            generator: the generator to draw from; ``None`` with no seed uses a random seed.
        """
        return _darken_at_random(self, image, seed, generator)


@dataclass(frozen=True)
class LowLightMixture:
    r"""Random low-light degradation from one of several :class:`LowLightSynthesizer`\ s, picked per image.

    One uniform draw picks component :math:`i` with probability :math:`w_i / \sum_j w_j`; that
    component then draws the parameters. A mixture says what uniform ranges cannot: "mostly
    LOL-like darkness, sometimes mild dimming". Widening one synthesizer's gamma and scale ranges
    to reach mild dimming spreads the draws evenly over everything in between, while a mixture
    keeps a chosen share of them at LOL-like darkness and puts the rest where it is told.

    Args:
        components: the synthesizers, at least one.
        weights: their relative probabilities, one positive number per component.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.data import LowLightMixture, LowLightSynthesizer
        >>> mild = LowLightSynthesizer(gamma=(1.0, 1.5), scale=(0.5, 1.0))
        >>> mixture = LowLightMixture((LowLightSynthesizer.lol_wide(), mild), weights=(3, 1))
        >>> scales = [mixture.sample_params(torch.Generator().manual_seed(i)).scale for i in range(400)]
        >>> 0.2 < sum(s > 0.45 for s in scales) / 400 < 0.3  # a quarter of the draws are mild
        True
    """

    components: tuple[LowLightSynthesizer, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        components, weights = tuple(self.components), tuple(float(w) for w in self.weights)
        if not components or not all(isinstance(c, LowLightSynthesizer) for c in components):
            raise ValueError(f"components must be one or more LowLightSynthesizers, got {self.components!r}")
        if len(weights) != len(components) or not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(
                f"weights must be {len(components)} positive numbers, one per component, got {self.weights!r}"
            )
        object.__setattr__(self, "components", components)
        object.__setattr__(self, "weights", weights)

    def sample_params(self, generator: torch.Generator) -> LowLightParams:
        """Pick a component with one draw from the CPU ``generator``, then draw its parameters.

        Example:
            >>> import torch
            >>> from flowkit.models.llflow.data import LowLightMixture, LowLightSynthesizer
            >>> only = LowLightMixture((LowLightSynthesizer(),), weights=(1,))
            >>> 0.15 <= only.sample_params(torch.Generator().manual_seed(0)).scale <= 0.5
            True
        """
        bounds = list(itertools.accumulate(self.weights))
        u = float(torch.rand((), generator=generator, dtype=torch.float64)) * bounds[-1]
        index = min(bisect.bisect_right(bounds, u), len(bounds) - 1)  # min: in case rounding gives u == total
        return self.components[index].sample_params(generator)

    def __call__(
        self, image: Tensor, *, seed: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, LowLightParams]:
        """Darken ``image`` with parameters from a component picked at random; as :meth:`LowLightSynthesizer.__call__`."""
        return _darken_at_random(self, image, seed, generator)


def _darken_at_random(
    synthesizer: LowLightSynthesizer | LowLightMixture, image: Tensor, seed: int | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, LowLightParams]:
    if seed is not None and generator is not None:
        raise ValueError("pass a seed or a generator, not both")
    if generator is None:
        generator = torch.Generator()
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
    params = synthesizer.sample_params(generator)
    return darken(image, params, generator=generator), params


# Fitted by flowkit.models.llflow.data.calibration.calibrate on the four real LOL pairs in ../shared/data/LOL
# (docs/figures/calibration.py prints the per-pair fits); each range is the fits' span, widened.
LOL_FIT: dict[str, tuple[float, float]] = {
    "gamma": (1.64, 2.89),
    "scale": (0.153, 0.424),
    "shot_noise": (8.7e-6, 1.15e-4),
    "read_noise": (3.14e-3, 4.87e-3),
    "red_gain": (0.475, 1.13),
    "blue_gain": (0.623, 1.09),
    "red_noise": (1.94, 2.56),
    "blue_noise": (1.20, 1.86),
}

# LOL_FIT with darker exposures (see LowLightSynthesizer.lol_wide) and the read-noise multipliers
# that flowkit.models.llflow.data.calibration.calibrate fits to the same four pairs with today's noise sampler.
LOL_WIDE: dict[str, tuple[float, float]] = {
    **LOL_FIT,
    "scale": (0.08, 0.424),
    "red_noise": (1.65, 2.56),
    "blue_noise": (1.20, 1.58),
}


def _name_seed(seed: int, name: str) -> int:
    # From the name, not the position, so adding or removing files leaves the others unchanged.
    digest = hashlib.sha256(name.encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    state = np.random.SeedSequence([seed, *words]).generate_state(2, dtype=np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & (2**63 - 1)


def write_synthetic_pairs(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    synthesizer: LowLightSynthesizer | LowLightMixture | None = None,
    recursive: bool = False,
    multiple_of: int = 1,
    limit: int | None = None,
    overwrite: bool = False,
) -> list[ImagePair]:
    """Turn a folder of normal-light images into a pair folder ``out_dir/{low,high}/NAME.png``.

    ``high/NAME.png`` is the source as 8-bit RGB, ``low/NAME.png`` its darkened version, and
    ``params.csv`` records each image's parameters and seed (from ``seed`` and the name).

    Args:
        src_dir: folder of normal-light images (PNG, JPEG, ...).
        out_dir: where to write.
        seed: base seed.
        synthesizer: the degradation (default :class:`LowLightSynthesizer` ``()``), or a
            :class:`LowLightMixture`.
        recursive: include sub-folders (``train/2092.jpg`` becomes ``train_2092``).
        multiple_of: centre-crop height and width to a multiple of this (8 for LLFlow).
        limit: use only the first ``limit`` images in sorted order.
        overwrite: allow writing into an ``out_dir`` whose ``low``/``high`` already hold files.

    Returns:
        The written pairs, sorted by name.

    Raises:
        DatasetError: no images in ``src_dir``.
        ImageReadError: a source image cannot be read (named).
        FileExistsError: ``out_dir`` already holds pairs and ``overwrite`` is false.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import write_scenes, write_synthetic_pairs
        >>> tmp = Path(tempfile.mkdtemp())
        >>> _ = write_scenes(tmp / "normal", 2, 20, 20)
        >>> pairs = write_synthetic_pairs(tmp / "normal", tmp / "pairs", multiple_of=8)
        >>> [p.name for p in pairs], sorted(f.name for f in (tmp / "pairs").iterdir())
        (['scene_0000', 'scene_0001'], ['high', 'low', 'params.csv'])
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    synthesizer = synthesizer if synthesizer is not None else LowLightSynthesizer()
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be a positive int, got {multiple_of}")
    sources = image_files(src_dir, recursive=recursive)
    if limit is not None:
        sources = sources[:limit]
    if not sources:
        raise DatasetError(f"expected image files in {src_dir}, found none")
    names = ["_".join(p.relative_to(src_dir).with_suffix("").parts) for p in sources]
    if len(set(names)) != len(names):
        raise DatasetError(f"two source images in {src_dir} map to the same name", sorted(names))
    low_dir, high_dir = out_dir / "low", out_dir / "high"
    if not overwrite and any(d.is_dir() and any(d.iterdir()) for d in (low_dir, high_dir)):
        raise FileExistsError(f"{out_dir} already holds image pairs; pass overwrite=True to replace them")
    pairs, rows = [], []
    for source, name in zip(sources, names):
        high = read_image(source, dtype=torch.uint8)
        height, width = high.shape[1:]
        crop_h, crop_w = height - height % multiple_of, width - width % multiple_of
        if crop_h == 0 or crop_w == 0:
            raise DatasetError(f"{source} ({height}x{width}) is smaller than multiple_of={multiple_of}")
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        high = high[:, top : top + crop_h, left : left + crop_w]
        image_seed = _name_seed(seed, name)
        low, params = synthesizer(high, seed=image_seed)
        pair = ImagePair(name, low_dir / f"{name}.png", high_dir / f"{name}.png")
        write_image(pair.low, low)
        write_image(pair.high, high)
        pairs.append(pair)
        rows.append({"name": name, "source": str(source), "seed": image_seed, **asdict(params)})
    with open(out_dir / "params.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return sorted(pairs, key=lambda p: p.name)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m flowkit.models.llflow.data.synthetic SRC OUT`` (or ``--scenes N OUT``).

    Runs :func:`write_synthetic_pairs` on ``SRC``, or on ``N`` generated scenes (written to
    ``OUT/scenes``). Its errors are raised, not turned into a status.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> out = Path(tempfile.mkdtemp()) / "pairs"
        >>> main(["--scenes", "2", "--size", "16", "16", str(out)])  # doctest: +ELLIPSIS
        wrote 2 pairs to ...
        0
    """
    parser = argparse.ArgumentParser(
        prog="python -m flowkit.models.llflow.data.synthetic",
        description="Make synthetic low/normal-light training pairs (OUT/low, OUT/high, OUT/params.csv).",
    )
    parser.add_argument("paths", nargs="+", metavar="[SRC] OUT", help="source folder (unless --scenes) and output folder")
    parser.add_argument("--scenes", type=int, metavar="N", help="generate N scenes instead of reading SRC")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"), help="scene size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recursive", action="store_true", help="include sub-folders of SRC")
    parser.add_argument("--multiple-of", type=int, default=1, help="centre-crop sizes to a multiple of this")
    parser.add_argument("--limit", type=int, help="use only the first N source images")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if len(args.paths) != (1 if args.scenes is not None else 2):
        parser.error("give SRC and OUT, or --scenes N and OUT")
    out = Path(args.paths[-1])
    src = out / "scenes" if args.scenes is not None else Path(args.paths[0])
    if args.scenes is not None:
        write_scenes(src, args.scenes, *args.size, seed=args.seed)
    pairs = write_synthetic_pairs(src, out, seed=args.seed, recursive=args.recursive, multiple_of=args.multiple_of,
                                  limit=args.limit, overwrite=args.overwrite)
    print(f"wrote {len(pairs)} pairs to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
