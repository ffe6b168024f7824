from __future__ import annotations

import math

import pytest
import torch
from flow_strategies import perturbed, randn, seeded

from flowkit.layers import AffineCoupling, Coupling, FactorOut, MaskedAutoregressive, Split
from flowkit.recipes import MAF, NSF, Glow, RealNVP
from flowkit.testing import check_flow
from flowkit.transforms import RationalQuadraticSpline

VECTOR_RECIPES = {
    "RealNVP": lambda cond_features: RealNVP(3, cond_features, transforms=3, hidden_features=(8, 8)),
    "MAF": lambda cond_features: MAF(3, cond_features, transforms=2, hidden_features=(8,)),
    "NSF": lambda cond_features: NSF(3, cond_features, transforms=2, hidden_features=(8,), bins=4, bound=2.0),
    "NSF-coupling": lambda cond_features: NSF(3, cond_features, transforms=2, hidden_features=(8,), bins=4, coupling=True),
}


@pytest.mark.parametrize("cond_features", [0, 2])
@pytest.mark.parametrize("name", sorted(VECTOR_RECIPES))
def test_vector_recipes_are_flows_with_consistent_densities(name, cond_features):
    model = VECTOR_RECIPES[name](cond_features).double()
    perturbed(model, seed=1, scale=0.3, dtype=torch.float64)
    x = 1.5 * randn((3, 3), 0, torch.float64)
    cond = randn((3, cond_features), 1, torch.float64) if cond_features else None
    check_flow(model.flow, x, cond)
    n = None if cond_features else 3
    samples, log_prob = model.sample(n, cond, return_log_prob=True, generator=seeded(2))
    torch.testing.assert_close(log_prob, model.log_prob(samples, cond))


def test_vector_recipes_are_built_from_the_layers_they_name():
    assert [type(layer) for layer in RealNVP(4, transforms=2).flow] == [Coupling, Coupling]
    assert [layer.split for layer in RealNVP(5, transforms=2).flow] == [2, 3]  # alternating halves
    assert all(isinstance(layer, MaskedAutoregressive) for layer in MAF(2).flow)
    # MAF draws its MADEs' output layers (as the paper and zuko); the other recipes start at the identity.
    assert all(layer.made.net[-1].weight.abs().max() > 0 for layer in MAF(2).flow)
    assert all(layer.made.net[-1].weight.abs().max() == 0 for layer in NSF(2).flow)
    nsf = NSF(2, transforms=2, bins=5, bound=3.0)
    assert all(isinstance(layer.transform, RationalQuadraticSpline) for layer in nsf.flow)
    assert [layer.made.degrees.tolist() for layer in nsf.flow] == [[1, 2], [2, 1]]  # alternating orders
    assert nsf.flow[0].transform.bins == 5 and nsf.flow[0].transform.bound == 3.0


def test_glow_infers_every_shape():
    model = Glow((3, 8, 8), levels=3, steps=2, hidden_channels=(8, 8))
    assert model.latent_shape == (3, 8, 8)
    channels = [m.channels for m in model.flow.modules() if isinstance(m, (AffineCoupling, Split))]
    assert channels == [12, 12, 12, 24, 24, 24, 48, 48]
    assert [m.keep for m in model.flow.modules() if isinstance(m, FactorOut)] == [6, 12]
    assert model.nll(torch.rand(2, 3, 8, 8)).shape == (2,)
    flat = Glow((1, 4, 4), levels=2, steps=1, hidden_channels=(4, 4), split_priors=False)
    assert flat.latent_shape == (1, 4, 4)
    assert not any(isinstance(m, (Split, FactorOut)) for m in flat.flow.modules())


@pytest.mark.parametrize("split_priors", [True, False])
def test_conditional_glow_is_a_flow(split_priors):
    model = Glow((2, 4, 4), 1, levels=2, steps=1, hidden_channels=(4, 4), split_priors=split_priors)
    model = perturbed(model, 3, 0.2, torch.float64)
    x, cond = randn((2, 2, 4, 4), 0, torch.float64), randn((2, 1, 4, 4), 1, torch.float64)
    check_flow(model.flow, x, cond)


def test_glow_log_density_is_the_sum_of_its_levels_and_split_priors():
    """Glow's log p(x): the top latent's prior plus each factored-out half under its split's Gaussian."""
    model = perturbed(Glow((1, 4, 4), levels=2, steps=1, hidden_channels=(4, 4)), 5, 0.2, torch.float64).eval()
    with torch.no_grad():
        model.prior.mean.zero_(), model.prior.log_std.zero_()  # the standard normal, as in Glow's splits
    x = randn((3, 1, 4, 4), 6, torch.float64)
    outer = model.flow
    h, logdet = outer[:4](x)  # squeeze and one step: 4 channels at 2x2
    split = outer[4]
    mean, log_std = split.prior(h[:, :2])
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(h[:, 2:]).flatten(1).sum(1)
    top, top_logdet = outer[5].flow(h[:, :2])
    expected = expected + logdet + top_logdet + torch.distributions.Normal(0, 1).log_prob(top).flatten(1).sum(1)
    torch.testing.assert_close(model.log_prob(x), expected)


def test_conditional_spline_glow_samples_with_their_log_prob():
    model = Glow((1, 4, 4), 2, levels=2, steps=1, hidden_channels=(4, 4), transform=RationalQuadraticSpline(4, 3.0))
    model = perturbed(model, 4, 0.2, torch.float64).eval()
    cond = randn((3, 2, 4, 4), 1, torch.float64)
    x, log_prob = model.sample(cond=cond, return_log_prob=True)
    torch.testing.assert_close(log_prob, model.log_prob(x, cond))


COMPILE_CASES = {
    "RealNVP": lambda: (RealNVP(3, 2, transforms=2, hidden_features=(8,)), torch.randn(4, 3), torch.randn(4, 2)),
    "MAF": lambda: (MAF(3, 2, transforms=2, hidden_features=(8,)), torch.randn(4, 3), torch.randn(4, 2)),
    "NSF": lambda: (NSF(3, 2, transforms=2, hidden_features=(8,), bins=4), torch.randn(4, 3), torch.randn(4, 2)),
    "Glow": lambda: (
        Glow((2, 4, 4), 1, levels=2, steps=1, hidden_channels=(4, 4)), torch.rand(2, 2, 4, 4), torch.randn(2, 1, 4, 4)
    ),
}


@pytest.mark.parametrize("name", sorted(COMPILE_CASES))
def test_recipes_compile_without_graph_breaks(name):
    # fullgraph=True fails on any graph break; the "eager" backend checks exactly that (Dynamo's
    # capture) without paying for Inductor's code generation on a 2-core CI machine.
    # benchmarks/density.py --compile times the Inductor-compiled models.
    torch._dynamo.reset()
    model, x, cond = COMPILE_CASES[name]()
    perturbed(model, 0, 0.1)
    model.eval()
    expected = model.log_prob(x, cond)
    log_prob = torch.compile(model.log_prob, fullgraph=True, backend="eager")(x, cond)
    torch.testing.assert_close(log_prob, expected)
    z, _ = model.flow(x, cond)
    x_back, _ = torch.compile(model.flow.inverse, fullgraph=True, backend="eager")(z, cond)
    torch.testing.assert_close(x_back, x, rtol=1e-4, atol=1e-4)


def test_nsf_learns_a_two_dimensional_density():
    torch.manual_seed(0)
    angle = torch.rand(256) * math.pi
    data = torch.stack([angle.cos(), angle.sin()], 1) + 0.05 * torch.randn(256, 2)  # an arc
    model = NSF(2, transforms=2, hidden_features=(16,), bins=6, bound=2.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(model.nll(data, unit="nats").mean())
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.nll(data, unit="nats").mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert float(model.nll(data, unit="nats").mean()) < before - 0.5


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RealNVP(1), r"RealNVP expects features >= 2 \(a coupling .* use MAF or NSF\), got 1"),
        (lambda: NSF(1, coupling=True), "NSF expects features >= 2"),
        (lambda: MAF(0), "MAF expects features >= 1, got 0"),
        (lambda: MAF(2, transforms=0), "transforms >= 1, got cond_features=0, transforms=0"),
        (lambda: NSF(2, bins=0), "bins must be an integer >= 1, got 0"),
        (lambda: Glow((8,)), r"Glow is a flow on images: input_shape must be \(C, H, W\), got \(8,\); for vectors use"),
        (lambda: Glow((3, 12, 8), levels=3), r"H and W must be divisible by 8, got input_shape \(3, 12, 8\)"),
    ],
)
def test_recipe_errors_say_what_to_pass(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "build",
    [lambda: RealNVP(3, 0, 4), lambda: MAF(3, 0, 3), lambda: NSF(3, 0, 3), lambda: Glow((1, 4, 4), 0, 2)],
    ids=["RealNVP", "MAF", "NSF", "Glow"],
)
def test_recipe_options_after_the_sizes_are_keyword_only(build):
    with pytest.raises(TypeError, match="positional argument"):
        build()


def test_the_vector_recipes_pass_their_measured_log_scale_bound_explicitly():
    for model in (RealNVP(2, transforms=1), MAF(2, transforms=1)):
        transform = model.flow[0].transform
        assert (transform.clamp, transform.clamp_shape, transform.shift_first) == (math.log(1e3), "rational", False)
