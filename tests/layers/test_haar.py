from __future__ import annotations

import pytest
import torch
from flow_strategies import image_shapes, randn
from hypothesis import given
from hypothesis import strategies as st

from flowkit.layers import HaarDownsample, Squeeze
from flowkit.testing import check_flow


@given(
    shape=image_shapes(even=True, max_channels=3),
    order=st.sampled_from(["channel", "band"]),
    scale=st.sampled_from([1.0, 0.5, -2.0]),
    seed=st.integers(0, 2**16),
)
def test_haar_downsample_is_a_flow(shape, order, scale, seed):
    check_flow(HaarDownsample(order=order, scale=scale), randn(shape, seed, torch.float64))


def test_haar_bands_are_the_block_average_and_differences():
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    y, logdet = HaarDownsample(order="band")(x)
    a, b = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]
    c, d = x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
    expected = torch.cat([a + b + c + d, a - b + c - d, a + b - c - d, a - b - c + d], dim=1) / 2
    torch.testing.assert_close(y, expected)
    assert torch.equal(logdet, torch.zeros(2, dtype=torch.float64))
    # "channel" order keeps each input channel's bands together: a Squeeze-like channel layout.
    y_channel, _ = HaarDownsample(order="channel")(x)
    torch.testing.assert_close(y_channel.view(2, 3, 4, 2, 3), expected.view(2, 4, 3, 2, 3).transpose(1, 2))
    assert HaarDownsample()(x)[0].shape == Squeeze()(x)[0].shape


def test_haar_rejects_odd_sizes_and_bad_settings():
    with pytest.raises(ValueError, match=r"even H and W, got shape \(1, 1, 3, 4\)"):
        HaarDownsample()(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="order must be 'channel' or 'band'"):
        HaarDownsample(order="wavelet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale must be finite and non-zero, got 0"):
        HaarDownsample(scale=0.0)
