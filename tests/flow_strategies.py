"""Hypothesis strategies and builders shared by the layer and composition tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from flowkit.testing import perturb_parameters

DTYPES = st.sampled_from([torch.float32, torch.float64])


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=seeded(seed), dtype=torch.float64).to(dtype)


def perturbed(layer: torch.nn.Module, seed: int, scale: float = 0.2, dtype: torch.dtype = torch.float32):
    """``layer`` in ``dtype`` with every parameter moved away from its (identity) initialisation."""
    layer = layer.to(dtype)
    perturb_parameters(layer, scale, seeded(seed))
    return layer


@st.composite
def image_shapes(draw, *, even: bool = False, max_channels: int = 4, max_side: int = 4):
    """(B, C, H, W) with B in 1..4; H, W even when ``even`` (for squeezes)."""
    batch = draw(st.integers(1, 4))
    channels = draw(st.integers(2, max_channels))
    if even:
        height, width = 2 * draw(st.integers(1, max_side // 2)), 2 * draw(st.integers(1, max_side // 2))
    else:
        height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    return batch, channels, height, width
