"""The sub-networks: images keep their spatial size; MLP and conv_subnet are subnet constructors."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from flowkit.layers import AffineCoupling
from flowkit.nn import MLP, Conv2dActNorm, ZeroConv2d, ZeroLinear, conv_subnet


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_odd_kernels_keep_the_spatial_size(kernel_size):
    x = torch.randn(2, 3, 7, 6)
    assert Conv2dActNorm(3, 5, kernel_size)(x).shape == (2, 5, 7, 6)
    assert ZeroConv2d(3, 5, kernel_size)(x).shape == (2, 5, 7, 6)
    assert conv_subnet(3, 4, (8, 8), kernel_size=kernel_size)(x).shape == (2, 4, 7, 6)


@pytest.mark.parametrize("cls", [Conv2dActNorm, ZeroConv2d])
@pytest.mark.parametrize("kernel_size", [2, 4, 0, -1, True])
def test_a_kernel_that_cannot_keep_the_size_is_refused_at_construction(cls, kernel_size):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: kernel_size must be an odd positive int .*got {kernel_size!r}"):
        cls(3, 5, kernel_size)


def test_conv_subnet_has_one_hidden_layer_per_width():
    net = conv_subnet(3, 4, (8, 6, 5))
    assert [m.out_channels for m in net if isinstance(m, nn.Conv2d)] == [8, 6, 5, 4]
    assert [m.kernel_size for m in net if isinstance(m, nn.Conv2d)] == [(3, 3), (1, 1), (1, 1), (3, 3)]
    assert isinstance(net[-1], ZeroConv2d)


def test_mlp_has_one_hidden_layer_per_width_and_a_zero_last_layer():
    net = MLP(3, 4, (8, 6), activation=nn.Tanh)
    assert [type(m) for m in net] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, ZeroLinear]
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [8, 6, 4]
    assert net(torch.randn(5, 3)).abs().max() == 0
    last = MLP(3, 4, (), zero_last=False)[-1]
    assert type(last) is nn.Linear and last.weight.abs().max() > 0


def test_mlp_is_a_subnet_constructor_alone_or_partially_applied():
    assert isinstance(AffineCoupling(4, 1, subnet=MLP).subnet, MLP)
    layer = AffineCoupling(4, 1, subnet=functools.partial(MLP, hidden_features=(16,)))
    assert [m.out_features for m in layer.subnet if isinstance(m, nn.Linear)] == [16, 4]
    assert layer.subnet[0].in_features == 2 + 1  # passive features plus cond
    y, logdet = layer(torch.randn(3, 4), torch.randn(3, 1))
    assert y.shape == (3, 4) and logdet.shape == (3,)


@pytest.mark.parametrize("builder", [MLP, conv_subnet])
@pytest.mark.parametrize("hidden", [8, (8, 0), (8, 2.5), "64"])
def test_hidden_widths_must_be_a_sequence_of_positive_ints(builder, hidden):
    name = builder.__name__
    with pytest.raises(ValueError, match=rf"{name}: the hidden widths must be a sequence of positive ints, e\.g\. \(64, 64\), got"):
        builder(3, 4, hidden)


def test_mlp_options_are_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        MLP(3, 4, (8,), nn.Tanh)
