from __future__ import annotations

import pytest
import torch
from flow_strategies import DTYPES, image_shapes, perturbed, randn
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import flowkit
from flowkit.distributions import diag_gaussian_log_prob
from flowkit.layers import ActNorm, AffineCoupling, FactorOut, Split, Squeeze
from flowkit.testing import check_flow


@given(shape=image_shapes(), dtype=DTYPES, cond_channels=st.integers(0, 2), data=st.data(), seed=st.integers(0, 2**16))
def test_split_is_a_flow(shape, dtype, cond_channels, data, seed):
    keep = data.draw(st.integers(1, shape[1] - 1))
    split = perturbed(Split(shape[1], cond_channels, keep=keep), seed, scale=0.3, dtype=dtype)
    cond = randn((shape[0], cond_channels, *shape[2:]), seed + 1, dtype) if cond_channels else None
    check_flow(split, randn(shape, seed, dtype), cond)


def test_split_standardises_the_factored_half_under_its_prior():
    split = perturbed(Split(4, 1), seed=2, scale=0.3, dtype=torch.float64)
    x, cond = torch.randn(3, 4, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    y, logdet = split(x, cond)
    assert torch.equal(y[:, :2], x[:, :2])
    mean, log_std = split.prior(x[:, :2], cond)
    assert log_std.abs().min() > 0  # the prior is not the standard normal
    torch.testing.assert_close(y[:, 2:], (x[:, 2:] - mean) / log_std.exp())
    # A standard normal on eps gives Glow's log-density of the factored-out half.
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(x[:, 2:]).flatten(1).sum(1)
    torch.testing.assert_close(diag_gaussian_log_prob(y[:, 2:]) + logdet, expected)


@pytest.mark.parametrize("cond_channels", [0, 2])
def test_factor_out_runs_its_flow_on_the_kept_channels_only(cond_channels):
    dtype = torch.float64
    coarse = flowkit.Sequential(Squeeze(), ActNorm(8), AffineCoupling(8, cond_channels=cond_channels),
                                flowkit.Inverse(Squeeze()))
    if cond_channels:
        coarse = flowkit.WithCond(coarse, nn.AvgPool2d(2))
    flow = perturbed(FactorOut(coarse, keep=2), seed=3, scale=0.3, dtype=dtype)
    x = randn((2, 5, 4, 4), 4, dtype)
    cond = randn((2, cond_channels, 4, 4), 5, dtype) if cond_channels else None
    check_flow(flow, x, cond)
    y, logdet = flow(x, cond)
    assert torch.equal(y[:, 2:], x[:, 2:]) and flow.conditional == bool(cond_channels)
    expected_y, expected_logdet = coarse(x[:, :2], cond)
    torch.testing.assert_close(y[:, :2], expected_y)
    torch.testing.assert_close(logdet, expected_logdet)


def test_factor_out_names_what_does_not_fit():
    with pytest.raises(ValueError, match="keep must be at least 1"):
        FactorOut(ActNorm(2), keep=0)
    with pytest.raises(TypeError, match="expects a flowkit.Flow"):
        FactorOut(nn.Identity(), keep=1)
    with pytest.raises(ValueError, match=r"more than 2 channels, got a tensor of shape \(1, 2, 4, 4\)"):
        FactorOut(ActNorm(2), keep=2)(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"maps \(1, 2, 4, 4\) to \(1, 8, 2, 2\); end a level"):
        FactorOut(Squeeze(), keep=2)(torch.randn(1, 4, 4, 4))
