from __future__ import annotations

import pytest
import torch
from flow_strategies import image_shapes, randn
from hypothesis import given
from hypothesis import strategies as st

from flowkit.layers import Squeeze
from flowkit.testing import check_flow


@given(shape=image_shapes(even=True), order=st.sampled_from(["channel_major", "spatial_major"]))
def test_squeeze_is_a_flow(shape, order):
    check_flow(Squeeze(2, order=order), randn(shape, seed=0, dtype=torch.float64))


def _by_loops(x: torch.Tensor, f: int, order: str) -> torch.Tensor:
    b, c, h, w = x.shape
    out = torch.empty(b, c * f * f, h // f, w // f, dtype=x.dtype)
    for ch in range(c):
        for i in range(f):
            for j in range(f):
                target = ch * f * f + i * f + j if order == "channel_major" else (i * f + j) * c + ch
                out[:, target] = x[:, ch, i::f, j::f]
    return out


@pytest.mark.parametrize("factor", [2, 3, 8])
@pytest.mark.parametrize("order", ["channel_major", "spatial_major"])
def test_documented_channel_order(factor, order):
    x = torch.randn(2, 3, 2 * factor, 3 * factor)
    y, logdet = Squeeze(factor, order=order)(x)
    assert torch.equal(y, _by_loops(x, factor, order))
    assert torch.equal(logdet, torch.zeros(2))
    assert torch.equal(Squeeze(factor, order=order).inverse(y)[0], x)


def test_one_squeeze_by_8_differs_from_three_by_2():
    x = torch.randn(1, 3, 8, 8)
    once = Squeeze(8)(x)[0]
    thrice = x
    for _ in range(3):
        thrice = Squeeze(2)(thrice)[0]
    assert once.shape == thrice.shape
    assert not torch.equal(once, thrice)
    assert torch.equal(once.flatten().sort().values, thrice.flatten().sort().values)


def test_odd_spatial_size_is_an_error():
    with pytest.raises(ValueError, match="divisible by 2, got H=5, W=4"):
        Squeeze(2)(torch.randn(1, 3, 5, 4))


def test_inverse_rejects_channels_not_divisible():
    with pytest.raises(ValueError, match="C\\*4"):
        Squeeze(2).inverse(torch.randn(1, 6, 2, 2))
