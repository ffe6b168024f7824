from __future__ import annotations

import pytest
import torch

from flowkit.distributions import BoxUniform, DiagGaussian, GaussianMixture, StandardNormal, diag_gaussian_log_prob
from flowkit.nn import ZeroConv2d, ZeroLinear
from flowkit.testing import perturb_parameters


def test_diag_gaussian_log_prob_matches_torch_distributions():
    z, mean, log_std = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), 0.3 * torch.randn(3, 2, 4, 4)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(diag_gaussian_log_prob(z, mean, log_std), expected)


@pytest.mark.parametrize("mean, log_std", [(0.0, 0.0), (0.7, -0.4), (-2, 1)])
def test_diag_gaussian_log_prob_with_numbers_matches_torch_distributions(mean, log_std):
    z = torch.randn(5, 3, 2, dtype=torch.float64)
    normal = torch.distributions.Normal(torch.tensor(float(mean), dtype=torch.float64),
                                       torch.tensor(float(log_std), dtype=torch.float64).exp())
    torch.testing.assert_close(diag_gaussian_log_prob(z, mean, log_std), normal.log_prob(z).flatten(1).sum(1),
                               rtol=1e-14, atol=1e-12)
    assert diag_gaussian_log_prob(z[:0], mean, log_std).shape == (0,)
    assert diag_gaussian_log_prob(z.half(), mean, log_std).dtype == torch.float32


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


def _torch_mixture(log_weights, means, log_stds):
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=log_weights),
        torch.distributions.Independent(torch.distributions.Normal(means, log_stds.exp()), 1),
    )


def test_gaussian_mixture_log_prob_matches_torch_distributions():
    prior = GaussianMixture((3,), components=4, generator=torch.Generator().manual_seed(0)).double()
    perturb_parameters(prior, 0.5, torch.Generator().manual_seed(1))
    z = torch.randn(6, 3, dtype=torch.float64)
    expected = _torch_mixture(prior.logits, prior.means, prior.log_stds).log_prob(z)
    torch.testing.assert_close(prior.log_prob(z), expected)


def test_gaussian_mixture_samples_follow_the_weights_means_and_temperature():
    prior = GaussianMixture((1,), components=2)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.25, 0.75]).log())
        prior.means.copy_(torch.tensor([[-10.0], [10.0]]))
        prior.log_stds.fill_(0.0)
    samples = prior.sample(20000, temperature=0.5, generator=torch.Generator().manual_seed(2)).detach()
    right = samples[:, 0] > 0
    assert abs(float(right.float().mean()) - 0.75) < 0.015
    assert abs(float(samples[right].std()) - 0.5) < 0.02


def test_conditional_gaussian_mixture_adds_the_cond_net_offsets():
    k, d = 3, 2
    net = ZeroLinear(1, k * (1 + 2 * d))
    prior = GaussianMixture((d,), components=k, cond_net=net, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.weight.normal_()
    cond, z = torch.randn(5, 1), torch.randn(5, d)
    out = net(cond)
    logits = prior.logits + out[:, :k]
    means = prior.means + out[:, k : k + k * d].view(5, k, d)
    log_stds = prior.log_stds + out[:, k + k * d :].view(5, k, d)
    torch.testing.assert_close(prior.log_prob(z, cond), _torch_mixture(logits, means, log_stds).log_prob(z))
    assert prior.sample(cond=cond).shape == (5, d)


def test_gaussian_mixture_errors_say_what_was_expected():
    with pytest.raises(ValueError, match=r"must output shape \(2, 15\) \(K logits, K\*D means"):
        GaussianMixture((2,), 3, cond_net=ZeroLinear(1, 4)).log_prob(torch.zeros(2, 2), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="expects a conditioning tensor, got None"):
        GaussianMixture((2,), 3, cond_net=ZeroLinear(1, 15)).sample(4)
    with pytest.raises(ValueError, match="components >= 1, got 0"):
        GaussianMixture((2,), 0)


def test_box_uniform_density_support_and_samples():
    box = BoxUniform(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.5]))
    samples = box.sample(1000, generator=torch.Generator().manual_seed(0))
    assert bool(((samples >= box.low) & (samples < box.high)).all())
    torch.testing.assert_close(box.log_prob(samples), torch.full((1000,), -torch.tensor(1.0).log().item()))
    assert box.log_prob(torch.tensor([[0.0, 0.6]])).item() == float("-inf")
    expected = torch.distributions.Independent(torch.distributions.Uniform(box.low, box.high), 1)
    torch.testing.assert_close(box.log_prob(samples[:3]), expected.log_prob(samples[:3]))


def test_box_uniform_errors():
    with pytest.raises(ValueError, match="high must exceed low everywhere"):
        BoxUniform(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="no temperature"):
        BoxUniform(0.0, 1.0).sample(2, temperature=0.5)


def test_standard_normal_rejects_a_conditioning_it_would_ignore():
    prior = StandardNormal((3,))
    with pytest.raises(ValueError, match="StandardNormal is unconditional but was given a conditioning tensor"):
        prior.log_prob(torch.randn(2, 3), torch.randn(2, 1))
    with pytest.raises(ValueError, match="StandardNormal is unconditional but was given a conditioning tensor"):
        prior.sample(2, torch.randn(2, 1))
