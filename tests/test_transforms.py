"""The element-wise transforms; the spline against a float64 re-implementation of the paper's formulas."""

from __future__ import annotations

import math

import pytest
import torch
from flow_strategies import randn
from hypothesis import given
from hypothesis import strategies as st

from flowkit.transforms import AdditiveTransform, AffineTransform, RationalQuadraticSpline, soft_clamp

# ---------------------------------------------------------------------------------------------
# An independent reference: scalar Python floats, Durkan et al. (2019) section 3.1 written out, a
# linear scan for the bin, and bisection (not the quadratic formula) for the inverse.


def _fractions(raw: list[float], minimum: float) -> list[float]:
    top = max(raw)
    exps = [math.exp(r - top) for r in raw]
    total = sum(exps)
    return [minimum + (1 - minimum * len(raw)) * e / total for e in exps]


def _reference_knots(raw: list[float], minimum: float, bound: float) -> list[float]:
    knots, position = [-bound], -bound
    for fraction in _fractions(raw, minimum)[:-1]:
        position += 2 * bound * fraction
        knots.append(position)
    return [*knots, bound]


class ReferenceSpline:
    """One element's spline, from the paper's formulas, in float64 Python arithmetic."""

    def __init__(self, params: list[float], bins: int, bound: float, min_w: float, min_h: float, min_d: float,
                 logit_scale: float = 1.0):
        self.bound = bound
        self.xs = _reference_knots([logit_scale * r for r in params[:bins]], min_w, bound)
        self.ys = _reference_knots([logit_scale * r for r in params[bins : 2 * bins]], min_h, bound)
        # delta = min_d + softplus(raw + b), with b such that raw = 0 gives delta = 1.
        b = math.log(math.exp(1 - min_d) - 1)
        inner = [min_d + math.log1p(math.exp(r + b)) for r in params[2 * bins :]]
        self.ds = [1.0, *inner, 1.0]

    def _bin(self, knots: list[float], value: float) -> int:
        k = 0
        while k + 1 < len(knots) - 1 and value >= knots[k + 1]:
            k += 1
        return k

    def value_and_derivative(self, x: float) -> tuple[float, float]:
        if not -self.bound <= x <= self.bound:
            return x, 1.0
        k = self._bin(self.xs, x)
        w, h = self.xs[k + 1] - self.xs[k], self.ys[k + 1] - self.ys[k]
        s, d0, d1 = h / w, self.ds[k], self.ds[k + 1]
        xi = (x - self.xs[k]) / w
        denominator = s + (d1 + d0 - 2 * s) * xi * (1 - xi)
        value = self.ys[k] + h * (s * xi**2 + d0 * xi * (1 - xi)) / denominator
        derivative = s**2 * (d1 * xi**2 + 2 * s * xi * (1 - xi) + d0 * (1 - xi) ** 2) / denominator**2
        return value, derivative

    def inverse(self, y: float) -> float:
        if not -self.bound <= y <= self.bound:
            return y
        lo, hi = -self.bound, self.bound
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if self.value_and_derivative(mid)[0] < y:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)


def _reference_for(spline: RationalQuadraticSpline, params: torch.Tensor) -> ReferenceSpline:
    return ReferenceSpline(
        params.tolist(), spline.bins, spline.bound, spline.min_bin_width, spline.min_bin_height, spline.min_derivative,
        spline.bin_logit_scale,
    )


def _probe_points(ref: ReferenceSpline) -> list[float]:
    """Knots (edges of every bin, the first and the last included), points inside bins, tails."""
    inside = [0.5 * (a + b) for a, b in zip(ref.xs[:-1], ref.xs[1:])]
    near = [k + sign * 1e-9 for k in ref.xs[1:-1] for sign in (-1, 1)]
    return [*ref.xs, *inside, *near, -ref.bound - 1.5, ref.bound + 0.25, -1e3, 1e3]


@pytest.mark.parametrize("bins", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("logit_scale", [1.0, 0.3])
def test_spline_matches_the_reference_values_derivatives_and_inverse(bins, seed, logit_scale):
    spline = RationalQuadraticSpline(bins, bound=2.5, min_bin_width=0.01, min_bin_height=0.02, min_derivative=0.05,
                                     bin_logit_scale=logit_scale)
    params = (1.5 / logit_scale) * randn((spline.params_per_element,), seed, torch.float64)
    ref = _reference_for(spline, params)
    points = _probe_points(ref)
    x = torch.tensor(points, dtype=torch.float64).view(1, -1)
    y, log_derivative = spline(x, params.expand(1, len(points), -1))
    expected = [ref.value_and_derivative(p) for p in points]
    torch.testing.assert_close(y[0], torch.tensor([v for v, _ in expected], dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        log_derivative[0], torch.tensor([math.log(d) for _, d in expected], dtype=torch.float64), rtol=0, atol=1e-10
    )
    x_back, inverse_log_derivative = spline.inverse(y, params.expand(1, len(points), -1))
    references = torch.tensor([ref.inverse(v) for v, _ in expected], dtype=torch.float64)
    torch.testing.assert_close(x_back[0], references, rtol=0, atol=1e-9)
    torch.testing.assert_close(inverse_log_derivative, -log_derivative, rtol=0, atol=1e-9)


def test_reference_derivative_is_the_slope_of_the_reference_values():
    # Guards the reference itself: its closed-form derivative against a central difference.
    spline = RationalQuadraticSpline(4, bound=1.0)
    ref = _reference_for(spline, randn((spline.params_per_element,), 7, torch.float64))
    for x in (-0.9, -0.31, 0.02, 0.5, 0.97):
        step = 1e-6
        slope = (ref.value_and_derivative(x + step)[0] - ref.value_and_derivative(x - step)[0]) / (2 * step)
        assert math.isclose(slope, ref.value_and_derivative(x)[1], rel_tol=1e-6)


def test_spline_knots_are_exact_and_tails_are_the_identity():
    spline = RationalQuadraticSpline(3, bound=2.0)
    params = randn((1, 1, spline.params_per_element), 3, torch.float64)
    ends = torch.tensor([[-2.0]], dtype=torch.float64), torch.tensor([[2.0]], dtype=torch.float64)
    for end in ends:
        y, log_derivative = spline(end, params)
        assert torch.equal(y, end) and torch.equal(log_derivative, torch.zeros_like(end))
    tails = torch.tensor([[-7.0], [3.5]], dtype=torch.float64)
    y, log_derivative = spline(tails, params.expand(2, 1, -1))
    assert torch.equal(y, tails) and torch.equal(log_derivative, torch.zeros_like(tails))


def test_zero_parameters_are_the_identity():
    spline = RationalQuadraticSpline(6, bound=1.5)
    x = torch.linspace(-2, 2, 41, dtype=torch.float64).view(1, -1)
    y, log_derivative = spline(x, torch.zeros(1, 41, spline.params_per_element, dtype=torch.float64))
    torch.testing.assert_close(y, x, rtol=0, atol=1e-14)
    torch.testing.assert_close(log_derivative, torch.zeros_like(x), rtol=0, atol=1e-14)


@given(
    bins=st.integers(1, 10),
    scale=st.floats(0.1, 4.0),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_spline_round_trips_and_its_log_derivative_is_autograds(bins, scale, dtype, seed):
    spline = RationalQuadraticSpline(bins, bound=3.0)
    x = (2.5 * randn((3, 16), seed, torch.float64)).requires_grad_(True)
    params = scale * randn((3, 16, spline.params_per_element), seed + 1, torch.float64)
    y, log_derivative = spline(x, params)
    (slope,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(log_derivative, slope.log(), rtol=0, atol=1e-9)
    x_low, p_low = x.detach().to(dtype), params.to(dtype)
    y_low, log_derivative_low = spline(x_low, p_low)
    x_back, inverse_log_derivative = spline.inverse(y_low, p_low)
    # An ill-conditioned point (tiny derivative) cannot round-trip better than eps / f'(x).
    eps = torch.finfo(dtype).eps
    tolerance = 50 * eps * (1 + x_low.abs()) / torch.exp(log_derivative.detach().to(dtype)).clamp_max(1)
    assert bool(((x_back - x_low).abs() <= tolerance).all())
    if dtype == torch.float64:
        torch.testing.assert_close(inverse_log_derivative, -log_derivative_low, rtol=0, atol=1e-9)
    else:  # where x is ill-conditioned, compare at the point the inverse found
        torch.testing.assert_close(inverse_log_derivative, -spline(x_back, p_low)[1], rtol=1e-4, atol=1e-4)


def test_spline_is_strictly_increasing_across_bin_edges():
    spline = RationalQuadraticSpline(5, bound=1.0)
    x = torch.linspace(-1.2, 1.2, 4001, dtype=torch.float64).view(1, -1)
    params = 2 * randn((1, 1, spline.params_per_element), 11, torch.float64).expand(1, 4001, -1)
    y, _ = spline(x, params)
    assert bool((torch.diff(y[0]) > 0).all())


def test_spline_gradients_are_finite_in_the_tails():
    spline = RationalQuadraticSpline(4, bound=1.0)
    x = torch.tensor([[-50.0, 0.3, 50.0]], requires_grad=True)
    params = torch.randn(1, 3, spline.params_per_element, requires_grad=True)
    y, log_derivative = spline(x, params)
    (y.sum() + log_derivative.sum()).backward()
    assert bool(torch.isfinite(x.grad).all() and torch.isfinite(params.grad).all())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": 0}, r"bins must be an integer >= 1, got 0"),
        ({"bins": 2.5}, r"bins must be an integer >= 1, got 2.5"),
        ({"bound": -1.0}, r"bound must be positive and finite, got -1.0"),
        ({"bound": math.inf}, r"bound must be positive and finite"),
        ({"bins": 4, "min_bin_width": 0.3}, r"min_bin_width must be in \[0, 1/bins\) = \[0, 0.25\).*got 0.3"),
        ({"bins": 4, "min_bin_height": -0.1}, r"min_bin_height must be in"),
        ({"min_derivative": 0.0}, r"min_derivative must be in \(0, 1\).*got 0.0"),
        ({"min_derivative": 1.0}, r"min_derivative must be in \(0, 1\)"),
        ({"bin_logit_scale": 0.0}, r"bin_logit_scale must be positive and finite, got 0.0"),
        ({"bin_logit_scale": math.nan}, r"bin_logit_scale must be positive and finite, got nan"),
    ],
)
def test_bad_spline_settings_are_errors_that_say_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RationalQuadraticSpline(**kwargs)


def test_parameters_of_the_wrong_shape_are_an_error():
    spline = RationalQuadraticSpline(4)
    with pytest.raises(ValueError, match=r"expects parameters of shape \(2, 3, 11\).*got \(2, 3, 12\)"):
        spline(torch.zeros(2, 3), torch.zeros(2, 3, 12))
    with pytest.raises(ValueError, match=r"an h of shape \(2, 33\) for an input of shape \(2, 3\), got \(2, 30\)"):
        spline.map(torch.zeros(2, 3), torch.zeros(2, 30))


# ---------------------------------------------------------------------------------------------
# Affine and additive transforms.


@pytest.mark.parametrize("shift_first", [True, False])
@pytest.mark.parametrize(("scale", "clamp_shape"), [("exp", "tanh"), ("exp", "rational"), ("sigmoid", "tanh")])
def test_affine_transform_formulas(scale, clamp_shape, shift_first):
    transform = AffineTransform(scale, clamp=2.0, eps=1e-3, shift_first=shift_first, clamp_shape=clamp_shape)
    x = randn((4, 3), 0, torch.float64)
    params = randn((4, 3, 2), 1, torch.float64) * 3  # log-scales out to where the two bounds differ
    shift, raw = params[..., 0], params[..., 1]
    if scale == "sigmoid":
        s = torch.sigmoid(raw + 2) + 1e-3
    elif clamp_shape == "tanh":
        s = torch.exp(2.0 * torch.tanh(raw / 2.0))
    else:
        s = torch.exp(raw / (1 + raw.abs() / 2.0))
    y, log_derivative = transform(x, params)
    torch.testing.assert_close(y, (x + shift) * s if shift_first else x * s + shift)
    # map(), what the layers call, agrees (through the fused op, which shifts first, only where it applies)
    torch.testing.assert_close(transform.map(x, params.reshape(4, 6))[0], y)
    torch.testing.assert_close(log_derivative, s.log())
    x_back, inverse_log_derivative = transform.inverse(y, params)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_log_derivative, -log_derivative)


@pytest.mark.parametrize("inverse", [False, True])
def test_sigmoid_affine_map_through_the_fused_op_equals_the_elementwise_path(inverse):
    transform = AffineTransform("sigmoid")
    x, h = randn((2, 3, 4, 4), 2), randn((2, 6, 4, 4), 3)
    fused = transform.map(x, h, inverse=inverse)
    elementwise = transform.map(x, h, inverse=inverse, keep=torch.zeros((), dtype=torch.bool))
    torch.testing.assert_close(fused, elementwise)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize(
    "transform",
    [AffineTransform("sigmoid"), AffineTransform(), AdditiveTransform(), RationalQuadraticSpline(3)],
    ids=repr,
)
def test_map_joined_is_map_then_concatenation(transform, inverse):
    # The sigmoid affine writes into the joined tensor through fused_affine_coupling; the others
    # inherit MonotoneTransform's map-then-cat.
    passive, x = randn((2, 2, 3, 3), 4), randn((2, 3, 3, 3), 5)
    h = randn((2, 3 * transform.params_per_element, 3, 3), 6)
    y, logdet = transform.map(x, h, inverse=inverse)
    joined, joined_logdet = transform.map_joined(passive, x, h, inverse=inverse)
    assert torch.equal(joined, torch.cat([passive, y], dim=1)) and torch.equal(joined_logdet, logdet)
    with pytest.raises(ValueError, match=r"expects \d+ parameters per element"):
        transform.map_joined(passive, x, h[:, 1:])


def test_map_unpacks_parameters_grouped_by_element_and_honours_keep():
    transform = AdditiveTransform()
    x = torch.zeros(1, 2, 1, 2)
    h = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).expand(1, 2, 1, 2)
    keep = torch.tensor([[False, True]])
    y, logdet = transform.map(x, h, keep=keep)
    assert y.tolist() == [[[[1.0, 0.0]], [[2.0, 0.0]]]] and logdet.tolist() == [0.0]
    spline = RationalQuadraticSpline(2)
    h = torch.arange(2.0 * spline.params_per_element).view(1, -1)  # two elements
    assert spline.unpack(h, torch.zeros(1, 2))[0, 1].tolist() == list(range(5, 10))


def test_soft_clamp_shapes_keep_the_identity_at_zero_and_stay_inside_the_bound():
    raw = torch.linspace(-50, 50, 1001, dtype=torch.float64, requires_grad=True)
    for shape in ("tanh", "rational"):
        bounded = soft_clamp(raw, 4.0, shape)
        assert bounded.abs().max() < 4.0
        (slope,) = torch.autograd.grad(bounded.sum(), raw)
        assert slope[500].item() == pytest.approx(1.0)  # raw[500] is 0 up to rounding
        assert soft_clamp(torch.zeros(1), 4.0, shape).item() == 0.0
        assert (slope > 0).all()  # strictly increasing: the bound never flattens into a clip
    # The rational shape is half the bound at |raw| = c; tanh is at 0.76 of it.
    assert soft_clamp(torch.tensor(4.0), 4.0, "rational").item() == pytest.approx(2.0)
    assert soft_clamp(torch.tensor(4.0), 4.0, "tanh").item() == pytest.approx(4 * math.tanh(1.0))
    with pytest.raises(ValueError, match="shape must be 'tanh' or 'rational', got 'clip'"):
        soft_clamp(raw, 4.0, "clip")  # type: ignore[arg-type]


def test_soft_clamp_and_bad_affine_settings():
    assert soft_clamp(torch.tensor(1e6), None).item() == 1e6
    with pytest.raises(ValueError, match="clamp_shape must be 'tanh' or 'rational', got 'hard'"):
        AffineTransform(clamp_shape="hard")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale must be 'exp' or 'sigmoid', got 'tanh'"):
        AffineTransform("tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clamp must be positive or None, got 0"):
        AffineTransform(clamp=0)
