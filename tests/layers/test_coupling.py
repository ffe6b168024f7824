from __future__ import annotations

import math

import pytest
import torch
from flow_strategies import DTYPES, image_shapes, perturbed, randn
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from flowkit.layers import AdditiveCoupling, AffineCoupling
from flowkit.nn import conv_subnet, mlp_subnet
from flowkit.testing import check_flow


def small_conv(cin, cout):
    return conv_subnet(cin, cout, hidden_channels=8)


@given(
    shape=image_shapes(),
    dtype=DTYPES,
    cond_channels=st.integers(0, 3),
    scale=st.sampled_from(["sigmoid", "exp"]),
    layout=st.sampled_from(["half", "cross"]),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_perturbed_affine_coupling_is_a_flow(shape, dtype, cond_channels, scale, layout, data, seed):
    split = data.draw(st.integers(1, shape[1] - 1))
    layer = AffineCoupling(shape[1], small_conv, cond_channels, split, scale, layout=layout)
    layer = perturbed(layer, seed, scale=0.3, dtype=dtype)
    cond = randn((shape[0], cond_channels, *shape[2:]), seed + 1, dtype) if cond_channels else None
    check_flow(layer, randn(shape, seed, dtype), cond)


@given(shape=image_shapes(), cond_channels=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_perturbed_additive_coupling_is_a_flow(shape, cond_channels, seed):
    layer = perturbed(AdditiveCoupling(shape[1], small_conv, cond_channels), seed, dtype=torch.float64)
    cond = randn((shape[0], cond_channels, *shape[2:]), seed + 1, torch.float64) if cond_channels else None
    report = check_flow(layer, randn(shape, seed, torch.float64), cond)
    assert report.logdet_error < 1e-9


@given(batch=st.integers(1, 4), channels=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_affine_coupling_on_vectors_with_an_mlp(batch, channels, seed):
    layer = perturbed(AffineCoupling(channels, mlp_subnet, cond_channels=2), seed, dtype=torch.float64)
    check_flow(layer, randn((batch, channels), seed, torch.float64), randn((batch, 2), seed + 1, torch.float64))


def test_fresh_sigmoid_coupling_has_zero_shift_and_constant_scale():
    layer = AffineCoupling(4, eps=1e-4)
    x = torch.randn(2, 4, 3, 3)
    y, logdet = layer(x)
    scale = 1 / (1 + math.exp(-2)) + 1e-4
    torch.testing.assert_close(y[:, :2], x[:, :2])
    torch.testing.assert_close(y[:, 2:], x[:, 2:] * scale)
    torch.testing.assert_close(logdet, torch.full((2,), 2 * 9 * math.log(scale)))


def test_fresh_exp_coupling_is_the_identity():
    layer = AffineCoupling(4, scale="exp")
    x = torch.randn(2, 4, 3, 3)
    y, logdet = layer(x)
    torch.testing.assert_close(y, x)
    assert torch.equal(logdet, torch.zeros(2))


def test_cross_layout_reads_shift_at_even_and_scale_at_odd_channels():
    h = torch.zeros(1, 4, 1, 1)
    h[0, 0] = 1.0  # shift of channel 0 under "cross"
    h[0, 3] = 3.0  # raw scale of channel 1 under "cross"
    layer = AffineCoupling(4, subnet=lambda cin, cout: _Constant(h), layout="cross")
    x = torch.zeros(1, 4, 1, 1)
    y, _ = layer(x)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    torch.testing.assert_close(y[0, 2:, 0, 0], torch.tensor([1.0 * (sig(2) + 1e-4), 0.0]))


class _Constant(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.h = nn.Parameter(h.clone())

    def forward(self, inputs):
        return self.h.expand(inputs.shape[0], -1, *inputs.shape[2:])


def test_subnet_may_be_a_module():
    net = conv_subnet(3, 2, hidden_channels=4)
    layer = AffineCoupling(3, subnet=net, split=2)
    assert layer.subnet is net


def test_missing_cond_is_an_error():
    with pytest.raises(ValueError, match=r"conditioning tensor of shape \(2, 3, 4, 4\), got None"):
        AffineCoupling(4, cond_channels=3)(torch.randn(2, 4, 4, 4))


def test_cond_of_the_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4, 4\), got \(2, 3, 2, 2\)"):
        AffineCoupling(4, cond_channels=3)(torch.randn(2, 4, 4, 4), torch.randn(2, 3, 2, 2))


def test_cond_given_to_an_unconditional_layer_is_an_error():
    with pytest.raises(ValueError, match="unconditional"):
        AdditiveCoupling(4)(torch.randn(2, 4, 4, 4), torch.randn(2, 1, 4, 4))


def test_subnet_with_the_wrong_output_is_an_error():
    layer = AffineCoupling(4, subnet=lambda cin, cout: nn.Conv2d(cin, cout + 1, 1))
    with pytest.raises(ValueError, match=r"subnet must output shape \(1, 4, 2, 2\), got \(1, 5, 2, 2\)"):
        layer(torch.randn(1, 4, 2, 2))


def test_bad_split_is_an_error():
    with pytest.raises(ValueError, match="0 < split < 4"):
        AffineCoupling(4, split=4)
