from __future__ import annotations

import pytest
import torch
from flow_strategies import DTYPES, perturbed, randn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from flowkit.layers import MADE, InverseAutoregressive, MaskedAutoregressive
from flowkit.testing import check_flow, perturb_parameters
from flowkit.transforms import AdditiveTransform, AffineTransform, RationalQuadraticSpline

TRANSFORMS = {
    "affine": lambda: AffineTransform(),
    # the MAF recipe's: scale then shift, zuko's rational bound on the log-scale
    "affine_rational": lambda: AffineTransform(clamp=6.9, clamp_shape="rational", shift_first=False),
    "additive": lambda: AdditiveTransform(),
    "spline": lambda: RationalQuadraticSpline(bins=4, bound=2.0),
}


@st.composite
def orders(draw, features: int):
    kind = draw(st.sampled_from(["sequential", "reverse", "permutation"]))
    return kind if kind != "permutation" else draw(st.permutations(range(features)))


@settings(max_examples=25)
@given(
    features=st.integers(1, 5),
    out_per_feature=st.integers(1, 3),
    hidden=st.lists(st.integers(1, 8), min_size=0, max_size=3),
    cond_features=st.integers(0, 2),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_made_outputs_depend_only_on_earlier_features(features, out_per_feature, hidden, cond_features, data, seed):
    order = data.draw(orders(features))
    made = MADE(features, out_per_feature, hidden, cond_features=cond_features, order=order, activation=nn.Tanh)
    made = made.double()
    perturb_parameters(made, 0.5, torch.Generator().manual_seed(seed))
    sequence = list(range(features)) if order == "sequential" else list(range(features))[::-1] if order == "reverse" else order
    x = randn((features,), seed, torch.float64)
    c = randn((1, cond_features), seed + 1, torch.float64) if cond_features else None
    jacobian = torch.autograd.functional.jacobian(lambda v: made(v.view(1, -1), c)[0], x)  # (D * P, D)
    for position, feature in enumerate(sequence):
        rows = jacobian[feature * out_per_feature : (feature + 1) * out_per_feature]
        later = sequence[position:]
        assert torch.equal(rows[:, later], torch.zeros_like(rows[:, later])), (feature, later)
        allowed = set(sequence[:position])
        assert made.inputs_of(feature) <= allowed
        if hidden and min(hidden) >= features - (cond_features == 0):  # wide enough: every allowed connection exists
            assert made.inputs_of(feature) == allowed


def test_made_reads_the_conditioning_everywhere_and_starts_at_zero():
    made = MADE(3, 2, (8,), cond_features=2, activation=nn.Tanh)  # tanh: no unit is ever dead
    assert made(torch.randn(4, 3), torch.randn(4, 2)).abs().max() == 0
    perturb_parameters(made, 0.5, torch.Generator().manual_seed(0))
    c = randn((1, 2), 1).requires_grad_(True)
    out = made(randn((1, 3), 2), c)
    (grad,) = torch.autograd.grad(out[0, :2].sum(), c)  # the first feature sees no input, only the conditioning
    assert grad.abs().sum() > 0


@settings(max_examples=20)
@given(
    batch=st.integers(1, 3),
    features=st.integers(1, 5),
    transform=st.sampled_from(sorted(TRANSFORMS)),
    cond_features=st.integers(0, 2),
    direction=st.sampled_from([MaskedAutoregressive, InverseAutoregressive]),
    dtype=DTYPES,
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_perturbed_autoregressive_layers_are_flows(batch, features, transform, cond_features, direction, dtype, data, seed):
    order = data.draw(orders(features))
    layer = direction(features, cond_features, transform=TRANSFORMS[transform](), hidden_features=(8, 8), order=order)
    layer = perturbed(layer, seed, scale=0.3, dtype=dtype)
    cond = randn((batch, cond_features), seed + 1, dtype) if cond_features else None
    check_flow(layer, 1.5 * randn((batch, features), seed, dtype), cond)


def test_maf_and_iaf_share_a_map_in_opposite_directions():
    options = {"transform": RationalQuadraticSpline(3), "hidden_features": (8,)}
    maf = perturbed(MaskedAutoregressive(4, 1, **options), 0, 0.5, torch.float64)
    iaf = InverseAutoregressive(4, 1, **options).double()
    iaf.load_state_dict(maf.state_dict())
    x, c = randn((3, 4), 1, torch.float64), randn((3, 1), 2, torch.float64)
    y, logdet = maf(x, c)
    z, inverse_logdet = iaf.inverse(x, c)
    torch.testing.assert_close((z, inverse_logdet), (y, logdet))


def test_a_fresh_layer_is_the_identity():
    layer = MaskedAutoregressive(3, 2, transform=RationalQuadraticSpline(4), hidden_features=(8,))
    x = torch.randn(5, 3)
    y, logdet = layer(x, torch.randn(5, 2))
    torch.testing.assert_close((y, logdet), (x, torch.zeros(5)))


def test_a_layer_without_a_zero_last_layer_starts_random_and_stays_autoregressive():
    torch.manual_seed(0)
    layer = MaskedAutoregressive(3, hidden_features=(8,), order="reverse", zero_last=False).double()
    last = layer.made.net[-1]
    assert last.weight.abs().max() > 0 and last.bias.abs().max() > 0
    x = randn((4, 3), 1, torch.float64)
    assert not torch.allclose(layer(x)[0], x)
    check_flow(layer, x)
    assert [sorted(layer.made.inputs_of(d)) for d in range(3)] == [[1, 2], [2], []]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order": "random"}, "order must be 'sequential', 'reverse' or a permutation, got 'random'"),
        ({"order": [0, 0, 1]}, r"order must be a permutation of range\(3\).*got \[0, 0, 1\]"),
        ({"hidden_features": (8, 0)}, r"hidden layer widths must be positive, got \(8, 0\)"),
        ({"transform": nn.Identity()}, "transform must be a flowkit.transforms.MonotoneTransform"),
    ],
)
def test_bad_settings_are_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        MaskedAutoregressive(3, **kwargs)


def test_inputs_are_checked():
    layer = MaskedAutoregressive(3, 2)
    with pytest.raises(ValueError, match=r"conditioning tensor of shape \(4, 2\), got None"):
        layer(torch.randn(4, 3))
    with pytest.raises(ValueError, match="expects 3 channels in its input, got 2"):
        layer.inverse(torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="unconditional"):
        MaskedAutoregressive(3)(torch.randn(4, 3), torch.randn(4, 1))


@pytest.mark.parametrize(
    "build",
    [
        lambda: MADE(3, 1, (8,), 2),
        lambda: MaskedAutoregressive(3, 0, AffineTransform()),
        lambda: InverseAutoregressive(3, 0, AffineTransform()),
    ],
    ids=["MADE", "MaskedAutoregressive", "InverseAutoregressive"],
)
def test_options_after_the_sizes_are_keyword_only(build):
    with pytest.raises(TypeError, match="positional argument"):
        build()
