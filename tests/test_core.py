from __future__ import annotations

import pytest
import torch
from flow_strategies import perturbed, randn
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import flowkit
from flowkit.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    AffineInjector,
    InvConv1x1,
    Permute,
    Squeeze,
)
from flowkit.nn import conv_subnet
from flowkit.testing import check_flow

COND = 2


def _subnet(cin, cout):
    return conv_subnet(cin, cout, hidden_channels=(6, 6))


def make_layer(kind: str, channels: int) -> flowkit.Flow:
    return {
        "actnorm": lambda: ActNorm(channels),
        "conv": lambda: InvConv1x1(channels),
        "conv_lu": lambda: InvConv1x1(channels, lu=True),
        "affine": lambda: AffineCoupling(channels, COND, subnet=_subnet),
        "affine_exp": lambda: AffineCoupling(channels, subnet=_subnet, scale="exp"),
        "additive": lambda: AdditiveCoupling(channels, COND, subnet=_subnet),
        "injector": lambda: AffineInjector(channels, COND, subnet=_subnet),
        "permute": lambda: Permute(channels, mode="shuffle"),
    }[kind]()


KINDS = ["actnorm", "conv", "conv_lu", "affine", "affine_exp", "additive", "injector", "permute"]


@given(
    kinds=st.lists(st.sampled_from([*KINDS, "squeeze"]), min_size=1, max_size=5),
    batch=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_random_compositions_are_flows(kinds, batch, dtype, seed):
    torch.manual_seed(seed)
    channels, side, layers = 2, 4, []
    for kind in kinds:
        if kind == "squeeze":
            # A squeezed sub-flow sees the conditioning at its own (halved) resolution; unsqueeze
            # afterwards so that later members keep the full-size shape.
            inner = flowkit.Sequential(Squeeze(), make_layer("affine", channels * 4))
            layers += [flowkit.WithCond(inner, nn.AvgPool2d(2)), flowkit.Inverse(Squeeze())]
        else:
            layers.append(make_layer(kind, channels))
    flow = perturbed(flowkit.Sequential(*layers), seed, scale=0.2, dtype=dtype)
    x = randn((batch, channels, side, side), seed, dtype)
    cond = randn((batch, COND, side, side), seed + 1, dtype) if flow.conditional else None
    check_flow(flow, x, cond)


def test_sequential_adds_logdets_and_inverts_in_reverse_order():
    torch.manual_seed(0)
    a, b = perturbed(ActNorm(3), 1), perturbed(InvConv1x1(3), 2)
    chain = flowkit.Sequential(a, b)
    x = torch.randn(2, 3, 2, 2)
    y, logdet = chain(x)
    ya, la = a(x)
    yb, lb = b(ya)
    torch.testing.assert_close(y, yb)
    torch.testing.assert_close(logdet, la + lb)
    torch.testing.assert_close(chain.inverse(y)[0], x, atol=1e-5, rtol=1e-5)


class _ScalarLogdet(flowkit.Flow):
    """A (sloppy) user layer: identity map, log-det a float32 scalar whatever the input."""

    def forward(self, x, cond=None):
        return x, torch.tensor(0.5)

    def inverse(self, y, cond=None):
        return y, torch.tensor(-0.5)


def test_sequential_log_det_has_the_batch_shape_and_dtype_whatever_its_first_member_returns():
    x = torch.randn(3, 2, dtype=torch.float64)
    for chain in (flowkit.Sequential(_ScalarLogdet()), flowkit.Sequential(_ScalarLogdet(), _ScalarLogdet())):
        for logdet, value in ((chain(x)[1], 0.5), (chain.inverse(x)[1], -0.5)):
            assert logdet.shape == (3,) and logdet.dtype == torch.float64
            torch.testing.assert_close(logdet, torch.full((3,), value * len(chain), dtype=torch.float64))
    assert flowkit.Sequential()(x)[1].tolist() == [0.0, 0.0, 0.0]


def test_sequential_indexing_slicing_and_iteration():
    layers = [ActNorm(2), InvConv1x1(2), Permute(2)]
    chain = flowkit.Sequential(*layers)
    assert len(chain) == 3
    assert list(chain) == layers
    assert chain[1] is layers[1]
    assert list(chain[1:]) == layers[1:]
    reversed_chain = chain[::-1]
    assert isinstance(reversed_chain, flowkit.Sequential) and len(reversed_chain) == 3
    x = torch.randn(2, 2, 3, 3)
    y, logdet = chain(x)
    back, back_logdet = reversed_chain(y)
    torch.testing.assert_close(back, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back_logdet, -logdet)


def test_inverse_swaps_directions_and_shares_parameters():
    norm = perturbed(ActNorm(2), 3)
    flipped = flowkit.Inverse(norm)
    x = torch.randn(1, 2, 2, 2)
    assert torch.equal(flipped(x)[0], norm.inverse(x)[0])
    assert torch.equal(flipped.inverse(x)[0], norm(x)[0])
    assert next(iter(flipped.parameters())) is norm.bias
    check_flow(flipped, x)


def test_sequential_rejects_non_flows():
    with pytest.raises(TypeError, match="member 1 is Conv2d"):
        flowkit.Sequential(ActNorm(2), nn.Conv2d(2, 2, 1))


def test_sequential_hands_cond_only_to_conditional_members():
    chain = flowkit.Sequential(ActNorm(2), AffineInjector(2, 1), InvConv1x1(2))
    y, _ = chain(torch.randn(1, 2, 2, 2), torch.randn(1, 1, 2, 2))
    assert torch.isfinite(y).all()


def test_unconditional_chain_rejects_cond():
    with pytest.raises(ValueError, match="no conditional member"):
        flowkit.Sequential(ActNorm(2))(torch.randn(1, 2, 2, 2), torch.randn(1, 1, 2, 2))


def test_unconditional_layer_rejects_cond():
    with pytest.raises(ValueError, match="InvConv1x1 is unconditional"):
        InvConv1x1(2)(torch.randn(1, 2, 2, 2), torch.randn(1, 1, 2, 2))


def test_with_cond_requires_cond():
    flow = flowkit.WithCond(AffineInjector(2, 1), nn.Identity())
    with pytest.raises(ValueError, match="got None"):
        flow(torch.randn(1, 2, 2, 2))


def test_pick_gives_each_level_its_own_conditioning_through_a_chain():
    first, second = (perturbed(AffineInjector(2, c), c, 0.3, torch.float64) for c in (1, 3))
    chain = flowkit.Sequential(flowkit.WithCond(first, flowkit.Pick(0)), flowkit.WithCond(second, flowkit.Pick(1))).eval()
    x, cond = randn((2, 2, 3, 3), 0, torch.float64), tuple(randn((2, c, 3, 3), c, torch.float64) for c in (1, 3))
    y, logdet = chain(x, cond)
    h, expected = first(x, cond[0])
    torch.testing.assert_close(y, second(h, cond[1])[0])
    torch.testing.assert_close(logdet, expected + second(h, cond[1])[1])
    torch.testing.assert_close(chain.inverse(y, list(cond))[0], x)
    with pytest.raises(ValueError, match=r"Pick\(1\) expects .* at least 2 .* got 1 items"):
        chain(x, cond[:1])
    with pytest.raises(ValueError, match="got a tensor of shape"):
        chain(x, cond[0])
