from __future__ import annotations

import pytest
import torch
from flow_strategies import image_shapes, seeded
from hypothesis import given
from hypothesis import strategies as st

from flowkit.layers import Logit
from flowkit.testing import check_flow


@given(shape=image_shapes(), alpha=st.sampled_from([0.0, 0.05, 0.3]), seed=st.integers(0, 2**16))
def test_logit_is_a_flow_on_the_unit_interval(shape, alpha, seed):
    x = torch.rand(shape, generator=seeded(seed), dtype=torch.float64) * 0.98 + 0.01
    check_flow(Logit(alpha=alpha), x)


def test_logit_log_density_matches_a_logistic_variable():
    # If y = logit(x) is standard logistic then x is uniform on [0, 1]: log p_X = 0 everywhere.
    x = torch.rand(5, 3, dtype=torch.float64)
    y, logdet = Logit(alpha=0.0)(x)
    logistic = torch.distributions.TransformedDistribution(
        torch.distributions.Uniform(0.0, 1.0), [torch.distributions.SigmoidTransform().inv]
    )
    torch.testing.assert_close(logistic.log_prob(y).sum(1) + logdet, torch.zeros(5, dtype=torch.float64))


def test_sigmoid_side_is_finite_far_out():
    x, logdet = Logit(alpha=0.05).inverse(torch.tensor([[-200.0, 200.0]]))
    assert torch.isfinite(logdet).all()
    torch.testing.assert_close(x, torch.tensor([[-0.05 / 0.9, 0.95 / 0.9]]))


def test_bad_alpha_is_an_error():
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 0.5\), got 0.5"):
        Logit(alpha=0.5)
