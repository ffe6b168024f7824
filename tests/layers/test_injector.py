from __future__ import annotations

import pytest
import torch
from flow_strategies import DTYPES, image_shapes, perturbed, randn
from hypothesis import given
from hypothesis import strategies as st

from flowkit.layers import AffineInjector
from flowkit.nn import conv_subnet
from flowkit.testing import check_flow
from flowkit.transforms import AffineTransform


@given(shape=image_shapes(), dtype=DTYPES, cond_channels=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_perturbed_injector_is_a_flow(shape, dtype, cond_channels, seed):
    layer = AffineInjector(shape[1], cond_channels, subnet=lambda i, o: conv_subnet(i, o, (8, 8)))
    layer = perturbed(layer, seed, scale=0.3, dtype=dtype)
    cond = randn((shape[0], cond_channels, *shape[2:]), seed + 1, dtype)
    check_flow(layer, randn(shape, seed, dtype), cond)


def test_scale_depends_only_on_cond():
    layer = perturbed(AffineInjector(2, 1, subnet=lambda i, o: conv_subnet(i, o, (4, 4))), seed=0)
    cond = torch.randn(1, 1, 3, 3)
    a, b = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3)
    (ya, lda), (yb, ldb) = layer(a, cond), layer(b, cond)
    torch.testing.assert_close(lda, ldb)
    # An element-wise affine map with x-independent parameters: y(a) - y(b) is proportional to a - b.
    ratio = (ya - yb) / (a - b)
    torch.testing.assert_close(ratio, layer(torch.ones_like(a), cond)[0] - layer(torch.zeros_like(a), cond)[0])


def test_injector_requires_cond():
    with pytest.raises(ValueError, match="got None"):
        AffineInjector(2, 3)(torch.randn(1, 2, 2, 2))


def test_injector_is_the_sigmoid_affine_transform_of_its_subnet_output():
    layer = perturbed(AffineInjector(2, 1, subnet=lambda i, o: conv_subnet(i, o, (4, 4)), eps=1e-3), seed=1)
    x, cond = torch.randn(2, 2, 3, 3), torch.randn(2, 1, 3, 3)
    expected = AffineTransform("sigmoid", eps=1e-3).map(x, layer.subnet(cond))
    got = layer(x, cond)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert list(layer.state_dict()) == [f"subnet.{key}" for key in layer.subnet.state_dict()]


def test_injector_options_are_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        AffineInjector(2, 1, None)
