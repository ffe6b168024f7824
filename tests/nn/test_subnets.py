"""The image sub-networks keep the spatial size, and say so when asked for a kernel that cannot."""

from __future__ import annotations

import pytest
import torch

from flowkit.nn import Conv2dActNorm, ZeroConv2d, conv_subnet


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_odd_kernels_keep_the_spatial_size(kernel_size):
    x = torch.randn(2, 3, 7, 6)
    assert Conv2dActNorm(3, 5, kernel_size)(x).shape == (2, 5, 7, 6)
    assert ZeroConv2d(3, 5, kernel_size)(x).shape == (2, 5, 7, 6)
    assert conv_subnet(3, 4, 8, kernel_size=kernel_size)(x).shape == (2, 4, 7, 6)


@pytest.mark.parametrize("cls", [Conv2dActNorm, ZeroConv2d])
@pytest.mark.parametrize("kernel_size", [2, 4, 0, -1, True])
def test_a_kernel_that_cannot_keep_the_size_is_refused_at_construction(cls, kernel_size):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: kernel_size must be an odd positive int .*got {kernel_size!r}"):
        cls(3, 5, kernel_size)
