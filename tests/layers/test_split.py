from __future__ import annotations

import pytest
import torch
from flow_strategies import DTYPES, image_shapes, perturbed, randn
from hypothesis import given
from hypothesis import strategies as st

from flowkit.distributions import diag_gaussian_log_prob
from flowkit.layers import Split
from flowkit.testing import FlowCheckError, check_flow


@given(shape=image_shapes(), dtype=DTYPES, cond_channels=st.integers(0, 2), data=st.data(), seed=st.integers(0, 2**16))
def test_split_bijection_is_a_flow(shape, dtype, cond_channels, data, seed):
    keep = data.draw(st.integers(1, shape[1] - 1))
    split = perturbed(Split(shape[1], keep, cond_channels), seed, scale=0.3, dtype=dtype)
    cond = randn((shape[0], cond_channels, *shape[2:]), seed + 1, dtype) if cond_channels else None
    check_flow(split.bijection(), randn(shape, seed, dtype), cond)


def test_forward_returns_the_log_density_of_the_factored_half():
    split = perturbed(Split(4, cond_channels=1), seed=2, scale=0.3, dtype=torch.float64)
    x, cond = torch.randn(3, 4, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    x1, log_p = split(x, cond)
    assert torch.equal(x1, x[:, :2])
    mean, log_std = split.prior(x1, cond)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(x[:, 2:]).flatten(1).sum(1)
    torch.testing.assert_close(log_p, expected)


def test_inverse_samples_with_the_temperature():
    split = Split(2)  # zero-initialised prior: N(0, 1)
    split.temperature = 0.5
    x, neg_log_p = split.inverse(torch.zeros(4000, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    assert abs(float(x[:, 1].detach().std()) - 0.5) < 0.02
    torch.testing.assert_close(neg_log_p, -diag_gaussian_log_prob(x[:, 1:]))


def test_merge_inverts_factor():
    split = perturbed(Split(5, keep=2), seed=1, scale=0.3, dtype=torch.float64)
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    x1, eps, _ = split.factor(x)
    torch.testing.assert_close(split.merge(x1, eps)[0], x)


def test_check_flow_explains_that_split_changes_dimension():
    with pytest.raises(FlowCheckError, match="bijection"):
        check_flow(Split(4), torch.randn(1, 4, 2, 2))
