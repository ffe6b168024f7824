from __future__ import annotations

import math

import pytest
import torch
from flow_strategies import DTYPES, image_shapes, perturbed, randn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from flowkit.layers import (
    AdditiveCoupling,
    AffineCoupling,
    CheckerboardCoupling,
    Coupling,
    alternating_mask,
)
from flowkit.nn import MLP, conv_subnet
from flowkit.testing import check_flow
from flowkit.transforms import AdditiveTransform, AffineTransform, RationalQuadraticSpline


def small_conv(cin, cout):
    return conv_subnet(cin, cout, hidden_channels=(8, 8))


@given(
    shape=image_shapes(),
    dtype=DTYPES,
    cond_channels=st.integers(0, 3),
    scale=st.sampled_from(["sigmoid", "exp"]),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_perturbed_affine_coupling_is_a_flow(shape, dtype, cond_channels, scale, data, seed):
    split = data.draw(st.integers(1, shape[1] - 1))
    layer = AffineCoupling(shape[1], cond_channels, subnet=small_conv, split=split, scale=scale)
    layer = perturbed(layer, seed, scale=0.3, dtype=dtype)
    cond = randn((shape[0], cond_channels, *shape[2:]), seed + 1, dtype) if cond_channels else None
    check_flow(layer, randn(shape, seed, dtype), cond)


@given(shape=image_shapes(), cond_channels=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_perturbed_additive_coupling_is_a_flow(shape, cond_channels, seed):
    layer = perturbed(AdditiveCoupling(shape[1], cond_channels, subnet=small_conv), seed, dtype=torch.float64)
    cond = randn((shape[0], cond_channels, *shape[2:]), seed + 1, torch.float64) if cond_channels else None
    report = check_flow(layer, randn(shape, seed, torch.float64), cond)
    assert report.logdet_error < 1e-9


@given(batch=st.integers(1, 4), channels=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_affine_coupling_on_vectors_with_an_mlp(batch, channels, seed):
    layer = perturbed(AffineCoupling(channels, 2, subnet=MLP), seed, dtype=torch.float64)
    check_flow(layer, randn((batch, channels), seed, torch.float64), randn((batch, 2), seed + 1, torch.float64))


def test_fresh_sigmoid_coupling_has_zero_shift_and_constant_scale():
    layer = AffineCoupling(4, eps=1e-4)
    x = torch.randn(2, 4, 3, 3)
    y, logdet = layer(x)
    scale = 1 / (1 + math.exp(-2)) + 1e-4
    torch.testing.assert_close(y[:, :2], x[:, :2])
    torch.testing.assert_close(y[:, 2:], x[:, 2:] * scale)
    torch.testing.assert_close(logdet, torch.full((2,), 2 * 9 * math.log(scale)))


def test_fresh_exp_coupling_is_the_identity():
    layer = AffineCoupling(4, scale="exp")
    x = torch.randn(2, 4, 3, 3)
    y, logdet = layer(x)
    torch.testing.assert_close(y, x)
    assert torch.equal(logdet, torch.zeros(2))


def test_the_subnet_output_holds_shifts_at_even_and_raw_scales_at_odd_channels():
    h = torch.zeros(1, 4, 1, 1)
    h[0, 0] = 1.0  # shift of active channel 0
    h[0, 3] = 3.0  # raw scale of active channel 1
    layer = AffineCoupling(4, subnet=lambda cin, cout: _Constant(h))
    x = torch.zeros(1, 4, 1, 1)
    y, _ = layer(x)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    torch.testing.assert_close(y[0, 2:, 0, 0], torch.tensor([1.0 * (sig(2) + 1e-4), 0.0]))


class _Constant(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.h = nn.Parameter(h.clone())

    def forward(self, inputs):
        return self.h.expand(inputs.shape[0], -1, *inputs.shape[2:])


def test_exp_scale_is_soft_clamped_at_3_by_default_as_everywhere():
    h = torch.zeros(1, 4, 1, 1)
    h[0, 1::2] = 100.0  # raw scales far beyond the bound
    layer = AffineCoupling(4, scale="exp", subnet=lambda cin, cout: _Constant(h))
    _, logdet = layer(torch.zeros(1, 4, 1, 1))
    torch.testing.assert_close(logdet, torch.tensor([2 * 3.0]))
    assert layer.transform.clamp == Coupling(4).transform.clamp == AffineTransform().clamp == 3.0


def test_subnet_may_be_a_module():
    net = conv_subnet(3, 2, hidden_channels=(4, 4))
    layer = AffineCoupling(3, subnet=net, split=2)
    assert layer.subnet is net


def test_missing_cond_is_an_error():
    with pytest.raises(ValueError, match=r"conditioning tensor of shape \(2, 3, 4, 4\), got None"):
        AffineCoupling(4, cond_channels=3)(torch.randn(2, 4, 4, 4))


def test_cond_of_the_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4, 4\), got \(2, 3, 2, 2\)"):
        AffineCoupling(4, cond_channels=3)(torch.randn(2, 4, 4, 4), torch.randn(2, 3, 2, 2))


def test_cond_given_to_an_unconditional_layer_is_an_error():
    with pytest.raises(ValueError, match="unconditional"):
        AdditiveCoupling(4)(torch.randn(2, 4, 4, 4), torch.randn(2, 1, 4, 4))


def test_subnet_with_the_wrong_output_is_an_error():
    layer = AffineCoupling(4, subnet=lambda cin, cout: nn.Conv2d(cin, cout + 1, 1))
    with pytest.raises(ValueError, match=r"subnet must output shape \(1, 4, 2, 2\), got \(1, 5, 2, 2\)"):
        layer(torch.randn(1, 4, 2, 2))


def test_bad_split_is_an_error():
    with pytest.raises(ValueError, match="0 < split < 4"):
        AffineCoupling(4, split=4)


# ---------------------------------------------------------------------------------------------
# Coupling with any element-wise transform, masks, checkerboard.

TRANSFORMS = {
    "affine": lambda: AffineTransform(),
    "affine_sigmoid": lambda: AffineTransform("sigmoid"),
    "additive": lambda: AdditiveTransform(),
    "spline": lambda: RationalQuadraticSpline(bins=4, bound=2.0),
}


def tiny_mlp(cin, cout):
    return MLP(cin, cout, (8, 8))


@settings(max_examples=20)
@given(
    batch=st.integers(1, 3),
    features=st.integers(2, 6),
    transform=st.sampled_from(sorted(TRANSFORMS)),
    cond_features=st.integers(0, 2),
    mask_kind=st.sampled_from(["split", "alternating", "custom"]),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_perturbed_coupling_on_vectors_is_a_flow(batch, features, transform, cond_features, mask_kind, data, seed):
    if mask_kind == "split":
        options = {"split": data.draw(st.integers(1, features - 1))}
    elif mask_kind == "alternating":
        options = {"mask": alternating_mask(features, data.draw(st.integers(0, 1)))}
    else:
        mask = data.draw(st.lists(st.booleans(), min_size=features, max_size=features).filter(lambda m: 0 < sum(m) < len(m)))
        options = {"mask": mask}
    layer = Coupling(features, cond_features, transform=TRANSFORMS[transform](), subnet=tiny_mlp, **options)
    layer = perturbed(layer, seed, scale=0.5, dtype=torch.float64)
    cond = randn((batch, cond_features), seed + 1, torch.float64) if cond_features else None
    check_flow(layer, 1.5 * randn((batch, features), seed, torch.float64), cond)


@settings(max_examples=10)
@given(
    shape=image_shapes(max_channels=3, max_side=3),
    transform=st.sampled_from(sorted(TRANSFORMS)),
    cond_channels=st.integers(0, 2),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_perturbed_coupling_on_images_is_a_flow(shape, transform, cond_channels, dtype, seed):
    layer = Coupling(shape[1], cond_channels, transform=TRANSFORMS[transform](), subnet=tiny_conv)
    layer = perturbed(layer, seed, 0.3, dtype)
    cond = randn((shape[0], cond_channels, *shape[2:]), seed + 1, dtype) if cond_channels else None
    check_flow(layer, randn(shape, seed, dtype), cond)


@settings(max_examples=10)
@given(
    shape=image_shapes(max_channels=3, max_side=4),
    transform=st.sampled_from(sorted(TRANSFORMS)),
    cond_channels=st.integers(0, 2),
    parity=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_perturbed_checkerboard_coupling_is_a_flow(shape, transform, cond_channels, parity, seed):
    layer = CheckerboardCoupling(shape[1], cond_channels, transform=TRANSFORMS[transform](), subnet=tiny_conv, parity=parity)
    layer = perturbed(layer, seed, 0.3, torch.float64)
    cond = randn((shape[0], cond_channels, *shape[2:]), seed + 1, torch.float64) if cond_channels else None
    check_flow(layer, randn(shape, seed, torch.float64), cond)


def tiny_conv(cin, cout):
    return conv_subnet(cin, cout, hidden_channels=(4, 4))


def test_checkerboard_passes_one_colour_through_and_the_subnet_never_sees_the_other():
    layer = perturbed(CheckerboardCoupling(2, subnet=tiny_conv, parity=0), 0, 0.5)
    x = torch.randn(1, 2, 4, 4)
    y, _ = layer(x)
    passive = (torch.arange(4)[:, None] + torch.arange(4)) % 2 == 0
    assert torch.equal(y[..., passive], x[..., passive])
    assert not torch.allclose(y[..., ~passive], x[..., ~passive])
    changed = x.clone()
    changed[..., ~passive] += 1.0  # moving the transformed pixels does not move their parameters
    torch.testing.assert_close(layer(changed)[1], layer(x)[1])  # the affine logdet depends on them alone


def test_masked_coupling_passes_the_masked_channels_through():
    mask = [False, True, True, False, False]
    layer = perturbed(Coupling(5, transform=RationalQuadraticSpline(3), subnet=tiny_mlp, mask=mask), 1, 0.5)
    x = torch.randn(4, 5)
    y, _ = layer(x)
    assert torch.equal(y[:, [1, 2]], x[:, [1, 2]])
    assert not torch.allclose(y[:, [0, 3, 4]], x[:, [0, 3, 4]])
    assert layer.subnet[0].in_features == 2 and layer.subnet[-1].out_features == 3 * 8


def test_a_fresh_spline_coupling_is_the_identity():
    layer = Coupling(3, 1, transform=RationalQuadraticSpline(5), subnet=tiny_mlp)
    x = 3 * torch.randn(6, 3)
    y, logdet = layer(x, torch.randn(6, 1))
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(logdet, torch.zeros(6))


@pytest.mark.parametrize(
    ("special", "transform", "where"),
    [
        (lambda **kw: AffineCoupling(4, 1, scale="exp", **kw), AffineTransform(), {}),
        (lambda **kw: AffineCoupling(4, 1, **kw), AffineTransform("sigmoid"), {}),  # the fused path
        (lambda **kw: AffineCoupling(4, 1, **kw), AffineTransform("sigmoid"), {"split": 1}),
        (lambda **kw: AffineCoupling(4, 1, **kw), AffineTransform("sigmoid"), {"mask": alternating_mask(4)}),
        (lambda **kw: AdditiveCoupling(4, 1, **kw), AdditiveTransform(), {}),
    ],
    ids=["exp", "sigmoid", "sigmoid-split-1", "sigmoid-mask", "additive"],
)
def test_affine_and_additive_couplings_are_coupling_with_the_transform(special, transform, where):
    layer = perturbed(special(subnet=tiny_conv, **where), 2, 0.3)
    general = Coupling(4, 1, transform=transform, subnet=tiny_conv, **where)
    assert isinstance(layer, Coupling) and repr(layer.transform) == repr(general.transform)
    general.load_state_dict(layer.state_dict())  # the same keys: the transforms hold no parameters
    x, c = torch.randn(2, 4, 3, 3), torch.randn(2, 1, 3, 3)
    assert not torch.allclose(layer(x, c)[0], x)  # perturbed away from the identity
    for direction in ("forward", "inverse"):
        expected, got = getattr(layer, direction)(x, c), getattr(general, direction)(x, c)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1]), direction


@pytest.mark.parametrize(
    "build",
    [
        lambda: Coupling(4, 0, AffineTransform()),
        lambda: AffineCoupling(4, 0, None),
        lambda: AdditiveCoupling(4, 0, None),
        lambda: CheckerboardCoupling(4, 0, None),
    ],
    ids=["Coupling", "AffineCoupling", "AdditiveCoupling", "CheckerboardCoupling"],
)
def test_options_after_the_sizes_are_keyword_only(build):
    with pytest.raises(TypeError, match="positional argument"):
        build()


def test_image_default_subnet_on_vectors_says_what_to_pass():
    for layer in (Coupling(4), AffineCoupling(4), AdditiveCoupling(4)):
        with pytest.raises(ValueError, match=r"default subnet is convolutional.*\(5, 2\).*subnet=flowkit.nn.MLP"):
            layer(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"expects images \(B, C, H, W\), got shape \(5, 4\)"):
        CheckerboardCoupling(4, subnet=tiny_mlp)(torch.randn(5, 4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": 2, "mask": [True, False, True, False]}, "give split or mask, not both"),
        ({"mask": [True, True, True, True]}, "both True and False entries"),
        ({"mask": [True, False]}, r"mask must be 4 booleans .*shape \(2,\)"),
        ({"mask": torch.tensor([1, 0, 1, 0])}, r"mask must be 4 booleans .*torch.int64"),
        ({"transform": nn.Identity()}, "transform must be a flowkit.transforms.MonotoneTransform, got Identity"),
    ],
)
def test_bad_coupling_settings_are_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Coupling(4, **kwargs)


def test_alternating_masks_and_checkerboard_parity_are_validated():
    with pytest.raises(ValueError, match="parity must be 0 or 1, got 2"):
        alternating_mask(4, 2)
    with pytest.raises(ValueError, match="parity must be 0 or 1, got -1"):
        CheckerboardCoupling(2, parity=-1)
