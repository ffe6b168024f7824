from __future__ import annotations

import math

import pytest
import torch
from flow_strategies import perturbed

import flowkit
from flowkit.distributions import GaussianMixture, StandardNormal
from flowkit.layers import ActNorm, AffineCoupling, Coupling, FactorOut, InvConv1x1, Split, Squeeze
from flowkit.nn import MLP
from flowkit.transforms import RationalQuadraticSpline


def test_log_prob_of_an_actnorm_flow_is_the_implied_gaussian():
    # z = (x + b) * exp(s) with z ~ N(0, 1) means x ~ N(-b, exp(-s)^2): an independent closed form.
    norm = perturbed(ActNorm(3), seed=0, scale=0.5)
    model = flowkit.FlowModel(norm, StandardNormal((3, 2, 2)))
    x = torch.randn(4, 3, 2, 2)
    mean, std = -norm.bias.detach(), torch.exp(-norm.logs.detach())
    expected = torch.distributions.Normal(mean, std).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.log_prob(x), expected)


def test_nll_units():
    model = flowkit.FlowModel(perturbed(ActNorm(2), 1), StandardNormal((2, 3, 3)))
    x = torch.randn(2, 2, 3, 3)
    nats = model.nll(x, unit="nats")
    torch.testing.assert_close(nats, -model.log_prob(x))
    torch.testing.assert_close(model.nll(x), nats / (math.log(2) * 18))
    with pytest.raises(ValueError, match="unit"):
        model.nll(x, unit="bits")


def test_dequantization_is_noise_in_training_and_a_fixed_correction_in_eval():
    model = flowkit.FlowModel(perturbed(ActNorm(1), 2), StandardNormal((1, 2, 2)), dequantize=256)
    x = torch.rand(2, 1, 2, 2)
    model.eval()
    plain = flowkit.FlowModel(model.flow, model.prior)
    torch.testing.assert_close(model.log_prob(x), plain.log_prob(x) - 4 * math.log(256))
    model.train()
    assert not torch.equal(model.log_prob(x), model.log_prob(x))


def test_non_finite_data_is_rejected():
    model = flowkit.FlowModel(ActNorm(1), StandardNormal((1,)))
    with pytest.raises(ValueError, match="non-finite"):
        model.log_prob(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="2 NaN/inf values"):
        model.log_prob(torch.tensor([[float("inf")], [1.0], [-float("inf")]]))
    # Finite values whose sum overflows are data, not an error.
    assert model.log_prob(torch.tensor([[3e38], [3e38]])).shape == (2,)


def _multiscale() -> flowkit.Sequential:
    """Squeeze, a split, an ActNorm on the kept half only, unsqueeze: 1x8x8 in and out."""
    return flowkit.Sequential(Squeeze(), Split(4), FactorOut(ActNorm(2), keep=2), flowkit.Inverse(Squeeze()))


def test_multiscale_sampling_uses_the_temperature_everywhere():
    torch.manual_seed(0)
    flow = _multiscale().eval()
    model = flowkit.FlowModel(flow, StandardNormal((1, 8, 8)))
    cold = model.sample(256, temperature=0.0, generator=torch.Generator().manual_seed(0))
    assert cold.abs().max() == 0  # zero-initialised split prior and zero prior temperature
    warm = Squeeze()(model.sample(4096, temperature=0.5))[0]
    assert abs(float(warm[:, 2:].std()) - 0.5) < 0.02  # the factored-out channels
    assert abs(float(warm[:, :2].std()) - 0.5) < 0.02  # the kept ones


def test_conditional_model_samples_one_per_cond_row():
    flow = flowkit.Sequential(ActNorm(2), InvConv1x1(2), AffineCoupling(2, 1))
    model = flowkit.FlowModel(flow, StandardNormal((2, 3, 3)))
    cond = torch.randn(5, 1, 3, 3)
    assert model.sample(cond=cond).shape == (5, 2, 3, 3)
    with pytest.raises(ValueError, match="needs n"):
        model.sample()


def test_sample_returns_the_log_prob_of_its_samples():
    torch.manual_seed(0)
    model = flowkit.FlowModel(perturbed(_multiscale(), 3, 0.3), StandardNormal((1, 8, 8)), dequantize=256).eval()
    x, log_prob = model.sample(5, temperature=0.7, return_log_prob=True)
    torch.testing.assert_close(log_prob, model.log_prob(x))
    spline = perturbed(Coupling(2, 1, transform=RationalQuadraticSpline(4), subnet=MLP), 4, 0.5, torch.float64)
    model = flowkit.FlowModel(spline, GaussianMixture((2,), 3).double())
    cond = torch.randn(6, 1, dtype=torch.float64)
    x, log_prob = model.sample(cond=cond, return_log_prob=True)
    torch.testing.assert_close(log_prob, model.log_prob(x, cond))
    assert model.sample(cond=cond).shape == (6, 2)  # the default still returns samples alone


def test_sample_validates_its_arguments():
    import flowkit
    from flowkit.distributions import StandardNormal
    from flowkit.layers import ActNorm

    model = flowkit.FlowModel(ActNorm(2), StandardNormal((2,))).eval()
    for temperature in (float("nan"), float("inf"), -0.5, "1"):
        with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
            model.sample(2, temperature=temperature)
    for n in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n must be a positive int"):
            model.sample(n)
    with pytest.raises(ValueError, match="n=3 but cond has 2 rows"):
        model.sample(3, cond=torch.zeros(2, 1))
    assert model.sample(3, temperature=0).shape == (3, 2)


def test_an_empty_batch_scores_to_an_empty_nll():
    model = flowkit.FlowModel(flowkit.Sequential(InvConv1x1(4), AffineCoupling(4)), StandardNormal((4, 6, 6)),
                              dequantize=256)
    empty = torch.rand(0, 4, 6, 6)
    for unit in ("bits/dim", "nats"):
        assert model.nll(empty, unit=unit).shape == (0,)
    # The same per-sample values whether or not other samples share the batch.
    model.eval()
    x = torch.rand(2, 4, 6, 6)
    assert torch.equal(model.nll(torch.cat([x, empty])), model.nll(x))
