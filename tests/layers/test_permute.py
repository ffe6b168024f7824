from __future__ import annotations

import pytest
import torch
from flow_strategies import image_shapes, randn
from hypothesis import given
from hypothesis import strategies as st

from flowkit.layers import Permute
from flowkit.testing import check_flow


@given(shape=image_shapes(), mode=st.sampled_from(["reverse", "swap", "shuffle"]), seed=st.integers(0, 100))
def test_permute_is_a_flow(shape, mode, seed):
    layer = Permute(shape[1], mode=mode, generator=torch.Generator().manual_seed(seed))
    check_flow(layer, randn(shape, seed, torch.float64))


def test_shuffle_is_a_saved_permutation():
    layer = Permute(7, mode="shuffle", generator=torch.Generator().manual_seed(3))
    assert sorted(layer.permutation.tolist()) == list(range(7))
    other = Permute(7, mode="shuffle", generator=torch.Generator().manual_seed(4))
    other.load_state_dict(layer.state_dict())
    x = torch.randn(2, 7)
    assert torch.equal(other(x)[0], layer(x)[0])
    assert torch.equal(layer(x)[0], x[:, layer.permutation])


def test_swap_trades_the_halves_of_the_default_coupling_split():
    for channels in (4, 5):
        x = torch.arange(float(channels)).view(1, channels)
        y, _ = Permute(channels, mode="swap")(x)
        half = channels // 2
        assert y[0, : channels - half].tolist() == x[0, half:].tolist()  # transformed: now conditioning
        assert y[0, channels - half :].tolist() == x[0, :half].tolist()


@pytest.mark.parametrize("channels", [0, -3, 2.0, True])
def test_channels_must_be_a_positive_int(channels):
    with pytest.raises(ValueError, match=rf"Permute: channels must be a positive int, got {channels!r}"):
        Permute(channels)
