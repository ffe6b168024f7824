"""Procedural normal-light "scenes" (gradients, shapes, textures), so the pipeline runs without photos.

They have what a low-light model needs to see (shading, edges, flat regions, texture, saturated
and grey colours); darken them with :mod:`flowkit.models.llflow.data.synthetic` for training pairs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from flowkit.models.llflow.data.io import write_image

__all__ = ["make_scene", "write_scenes"]


def _uniform(generator: torch.Generator, low: float, high: float, size: tuple[int, ...] = ()) -> Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def _texture(generator: torch.Generator, yy: Tensor, xx: Tensor) -> Tensor:
    kind = int(torch.randint(0, 3, (1,), generator=generator))
    if kind == 0:
        angle = float(_uniform(generator, 0, math.pi))
        period = float(_uniform(generator, 3, 24))
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
        return 0.5 + 0.5 * torch.sin(phase)
    if kind == 1:
        cell = int(torch.randint(2, 12, (1,), generator=generator))
        cells = torch.div(yy, cell, rounding_mode="floor") + torch.div(xx, cell, rounding_mode="floor")
        return (cells % 2).to(torch.float64)
    height, width = yy.shape
    noise = torch.rand((1, 1, height, width), generator=generator, dtype=torch.float64)
    size = int(torch.randint(1, 4, (1,), generator=generator)) * 2 + 1
    smooth = torch.nn.functional.avg_pool2d(noise, size, stride=1, padding=size // 2, count_include_pad=False)
    smooth = smooth[0, 0]
    return (smooth - smooth.min()) / (smooth.max() - smooth.min() + 1e-12)


def make_scene(height: int, width: int, *, seed: int = 0, shapes: tuple[int, int] = (3, 9)) -> Tensor:
    """Draw one scene: a shaded two-colour gradient with textured rectangles and ellipses on top.

    Returns a uint8 (3, height, width) image, a function of the arguments only; the number of
    shapes is drawn from ``range(*shapes)``.

    Example:
        >>> from flowkit.models.llflow.data import make_scene
        >>> scene = make_scene(32, 48, seed=1)
        >>> scene.shape, scene.dtype, torch.equal(scene, make_scene(32, 48, seed=1))
        (torch.Size([3, 32, 48]), torch.uint8, True)
    """
    if height < 1 or width < 1:
        raise ValueError(f"make_scene expects a positive size, got {height}x{width}")
    if not 0 <= shapes[0] < shapes[1]:
        raise ValueError(f"shapes must be a range (low, high) with 0 <= low < high, got {shapes}")
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    # Background: a gradient between two colours along a random direction, with slow shading.
    angle = float(_uniform(generator, 0, 2 * math.pi))
    ramp = xx * math.cos(angle) + yy * math.sin(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min() + 1e-12)
    start, end = _uniform(generator, 0.1, 0.9, (3, 1, 1)), _uniform(generator, 0.1, 0.9, (3, 1, 1))
    image = start + (end - start) * ramp
    waves = float(_uniform(generator, 0.5, 2.0))
    shading = torch.cos(waves * 2 * math.pi * yy / height) * torch.cos(xx / width * math.pi)
    image = image * (0.85 + 0.15 * shading)
    count = int(torch.randint(shapes[0], shapes[1], (1,), generator=generator))
    for _ in range(count):
        cy, cx = float(_uniform(generator, 0, height)), float(_uniform(generator, 0, width))
        ry = float(_uniform(generator, 0.05, 0.35)) * height
        rx = float(_uniform(generator, 0.05, 0.35)) * width
        if bool(torch.rand((), generator=generator) < 0.5):
            mask = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
        else:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        colour = _uniform(generator, 0.05, 1.0, (3, 1, 1))
        strength = float(_uniform(generator, 0.0, 0.6))
        fill = colour * (1 - strength + strength * _texture(generator, yy, xx))
        image = torch.where(mask, fill, image)
    return torch.round(image.clamp(0, 1) * 255).to(torch.uint8)


def write_scenes(
    out_dir: str | Path, count: int, height: int = 128, width: int = 128, *, seed: int = 0
) -> list[Path]:
    """Write ``count`` scenes as PNGs ``scene_0000.png``, ... into ``out_dir``.

    Scene ``i`` is :func:`make_scene` with seed ``seed * 1_000_003 + i``; returns the paths.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from flowkit.models.llflow.data import write_scenes
        >>> [p.name for p in write_scenes(Path(tempfile.mkdtemp()), 2, 16, 16)]
        ['scene_0000.png', 'scene_0001.png']
    """
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    out_dir = Path(out_dir)
    paths = []
    for i in range(count):
        path = out_dir / f"scene_{i:04d}.png"
        write_image(path, make_scene(height, width, seed=seed * 1_000_003 + i))
        paths.append(path)
    return paths
