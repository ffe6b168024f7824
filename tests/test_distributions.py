from __future__ import annotations

import pytest
import torch

from flowkit.distributions import DiagGaussian, StandardNormal, diag_gaussian_log_prob
from flowkit.nn import ZeroConv2d


def test_diag_gaussian_log_prob_matches_torch_distributions():
    z, mean, log_std = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), 0.3 * torch.randn(3, 2, 4, 4)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(diag_gaussian_log_prob(z, mean, log_std), expected)


def test_standard_normal_log_prob_and_sample_temperature():
    prior = StandardNormal((2, 3))
    z = torch.randn(4, 2, 3)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(z), expected)
    samples = prior.sample(20000, temperature=0.3, generator=torch.Generator().manual_seed(0))
    assert abs(float(samples.std()) - 0.3) < 0.005


def test_standard_normal_rejects_wrong_event_shape():
    with pytest.raises(ValueError, match=r"\(B, 2, 3\), got \(4, 3, 2\)"):
        StandardNormal((2, 3)).log_prob(torch.randn(4, 3, 2))


def test_learned_diag_gaussian():
    prior = DiagGaussian((2,))
    with torch.no_grad():
        prior.mean.copy_(torch.tensor([1.0, -2.0]))
        prior.log_std.copy_(torch.tensor([0.0, 0.5]))
    z = torch.randn(5, 2)
    expected = torch.distributions.Normal(prior.mean, prior.log_std.exp()).log_prob(z).sum(1)
    torch.testing.assert_close(prior.log_prob(z), expected)
    samples = prior.sample(20000, temperature=0.5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(samples.mean(0), prior.mean.detach(), atol=0.03, rtol=0)
    torch.testing.assert_close(samples.std(0), 0.5 * prior.log_std.detach().exp(), atol=0.03, rtol=0)


def test_conditional_diag_gaussian_reads_mean_then_log_std():
    net = ZeroConv2d(1, 4)
    with torch.no_grad():
        net.bias.copy_(torch.tensor([1.0, 2.0, 0.1, -0.2]))  # means of 2 channels, then log-stds
    prior = DiagGaussian(cond_net=net)
    cond = torch.randn(3, 1, 2, 2)
    mean, log_std = prior.params(cond)
    assert torch.equal(mean[:, :, 0, 0], torch.tensor([[1.0, 2.0]]).expand(3, 2))
    torch.testing.assert_close(log_std[:, :, 0, 0], torch.tensor([[0.1, -0.2]]).expand(3, 2))
    assert prior.sample(cond=cond).shape == (3, 2, 2, 2)


def test_conditional_prior_requires_cond():
    with pytest.raises(ValueError, match="got None"):
        DiagGaussian(cond_net=ZeroConv2d(1, 4)).log_prob(torch.randn(1, 2, 2, 2))
