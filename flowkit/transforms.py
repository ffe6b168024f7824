r"""Element-wise monotone transforms :math:`y_i = f(x_i; \theta_i)`, applied by couplings and
autoregressive layers, so that :math:`\log|\det J| = \sum_i \log f'(x_i; \theta_i)`.

The transforms own no parameters; the layer that uses one owns the sub-network.

**Parameter layout.** With ``P = params_per_element``, an input ``x`` of shape
``(B, C, *spatial)`` reads a sub-network output ``h`` of shape ``(B, C * P, *spatial)`` grouped by
element: channels ``c * P`` to ``c * P + P - 1`` parametrise channel ``c`` (SRFlow's ``"cross"``
layout). A zero ``h`` is the identity, except for the sigmoid-scaled affine (Glow's start).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.kernels import fused_affine, fused_affine_coupling
from flowkit.kernels.reference import compute_dtype

__all__ = [
    "AdditiveTransform",
    "AffineTransform",
    "MonotoneTransform",
    "RationalQuadraticSpline",
    "soft_clamp",
    "transform_or_default",
]


_CLAMP_SHAPES = ("tanh", "rational")


def soft_clamp(raw: Tensor, clamp: float | None, shape: Literal["tanh", "rational"] = "tanh") -> Tensor:
    r"""A smooth bound :math:`c` on a log-scale: ``c * tanh(raw / c)`` or ``raw / (1 + |raw| / c)``.

    Unlike a hard clip it keeps a gradient, which keeps affine flows from diverging early in
    training; both shapes have slope 1 at 0. ``"rational"`` (zuko's) decays more slowly than ``"tanh"``.

    Args:
        raw: the unbounded values (a sub-network's raw log-scales).
        clamp: the bound :math:`c > 0`, or ``None`` to return ``raw`` unchanged.
        shape: ``"tanh"`` (default) or ``"rational"``.

    Example:
        >>> import torch
        >>> from flowkit.transforms import soft_clamp
        >>> soft_clamp(torch.tensor([0.0, 100.0]), 2.0).tolist()
        [0.0, 2.0]
        >>> soft_clamp(torch.tensor([0.0, 2.0, -6.0]), 2.0, shape="rational").tolist()
        [0.0, 1.0, -1.5]
    """
    if clamp is None:
        return raw
    if shape == "tanh":
        return clamp * torch.tanh(raw / clamp)
    if shape == "rational":
        return raw / (1 + raw.abs() / clamp)
    raise ValueError(f"soft_clamp: shape must be 'tanh' or 'rational', got {shape!r}")


def transform_or_default(owner: str, transform: MonotoneTransform | None) -> MonotoneTransform:
    """``transform``, or the soft-clamped exp :class:`AffineTransform` for ``None``; a clear error otherwise.

    Args:
        owner: the layer's name, for the :class:`TypeError` raised on anything but a :class:`MonotoneTransform`.
        transform: the transform a layer was given, or ``None`` for the default.

    Example:
        >>> from flowkit.transforms import transform_or_default
        >>> transform_or_default("MyLayer", None)
        AffineTransform(scale='exp', clamp=3.0)
    """
    if transform is None:
        return AffineTransform()
    if not isinstance(transform, MonotoneTransform):
        raise TypeError(
            f"{owner}: transform must be a flowkit.transforms.MonotoneTransform, got {type(transform).__name__}"
        )
    return transform


class MonotoneTransform(nn.Module):
    r"""Base class of the element-wise strictly increasing maps :math:`y = f(x; \theta)`.

    Subclasses set :attr:`params_per_element` and implement :meth:`forward` and :meth:`inverse`
    on unpacked parameters; :meth:`map` and :meth:`map_joined` are what layers call with a
    sub-network's output.

    Example:
        >>> import torch
        >>> from flowkit.transforms import AffineTransform
        >>> f = AffineTransform()
        >>> x, h = torch.randn(3, 4), torch.zeros(3, 4 * f.params_per_element)
        >>> y, logdet = f.map(x, h)          # zero parameters: the identity
        >>> torch.equal(y, x), logdet.tolist()
        (True, [0.0, 0.0, 0.0])
    """

    params_per_element: int
    """How many sub-network outputs parametrise one element (``P``)."""

    def __init__(self) -> None:  # no arguments here: each transform's constructor takes its own
        super().__init__()

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x), log f'(x))`` element-wise; ``params`` has shape ``(*x.shape, P)``."""
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(f^{-1}(y), log (f^{-1})'(y))`` element-wise; ``params`` has shape ``(*y.shape, P)``."""
        raise NotImplementedError

    def unpack(self, h: Tensor, like: Tensor) -> Tensor:
        """``h`` of shape ``(B, C * P, *spatial)`` as ``(B, C, *spatial, P)`` (a view, no copy).

        Raises a :class:`ValueError` if ``h`` does not have that shape for ``like`` (``(B, C, *spatial)``).
        """
        self._check_packed(h, like)
        grouped = h.unflatten(1, (like.shape[1], self.params_per_element))
        # Vectors are already (B, C, P); skipping the no-op movedim saves an op on every call.
        return grouped if like.dim() == 2 else grouped.movedim(2, -1)

    def map(
        self, x: Tensor, h: Tensor, *, inverse: bool = False, keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Apply the transform (or its inverse) with the packed parameters ``h``.

        Args:
            x: ``(B, C, *spatial)`` input.
            h: ``(B, C * P, *spatial)`` parameters, grouped by element (see the module docs).
            inverse: apply :math:`f^{-1}` instead of :math:`f`.
            keep: optional boolean mask broadcastable to ``x``; where it is ``True`` the element
                passes through unchanged and adds nothing to the log-determinant (masked couplings).

        Returns:
            ``(y, logdet)`` with ``logdet`` of shape ``(B,)``, float32 or float64.
        """
        params = self.unpack(h, x)
        y, log_derivative = self.inverse(x, params) if inverse else self.forward(x, params)
        if keep is not None:
            y = torch.where(keep, x, y)
            log_derivative = torch.where(keep, torch.zeros_like(log_derivative), log_derivative)
        dtype = torch.promote_types(x.dtype, torch.float32)
        return y, log_derivative.flatten(1).sum(1).to(dtype)

    def map_joined(self, passive: Tensor, x: Tensor, h: Tensor, *, inverse: bool = False) -> tuple[Tensor, Tensor]:
        """:meth:`map` of ``x``, returned as ``(cat([passive, y], dim=1), logdet)``: a coupling's output.

        A transform with a fused kernel overrides it to write ``y`` straight into the joined tensor.
        """
        y, logdet = self.map(x, h, inverse=inverse)
        return torch.cat([passive, y], dim=1), logdet

    def _check_packed(self, h: Tensor, like: Tensor) -> None:
        p = self.params_per_element
        expected = (like.shape[0], like.shape[1] * p, *like.shape[2:])
        if tuple(h.shape) != expected:
            raise ValueError(
                f"{type(self).__name__} expects {p} parameters per element: an h of shape {expected} "
                f"for an input of shape {tuple(like.shape)}, got {tuple(h.shape)}"
            )

    def _check_params(self, x: Tensor, params: Tensor) -> None:
        p = self.params_per_element
        if tuple(params.shape) != (*x.shape, p):
            raise ValueError(
                f"{type(self).__name__} expects parameters of shape {(*x.shape, p)} "
                f"({p} per element of an input of shape {tuple(x.shape)}), got {tuple(params.shape)}"
            )


class AdditiveTransform(MonotoneTransform):
    r"""The shift ``y = x + t`` (NICE), volume preserving: one parameter per element.

    Use it (through :class:`~flowkit.layers.AdditiveCoupling`) where a unit Jacobian is wanted;
    the scaling then has to come from other layers (an :class:`~flowkit.layers.ActNorm`, or the prior).

    Example:
        >>> import torch
        >>> from flowkit.transforms import AdditiveTransform
        >>> y, log_derivative = AdditiveTransform()(torch.zeros(1, 2), torch.ones(1, 2, 1))
        >>> y.tolist(), log_derivative.tolist()
        ([[1.0, 1.0]], [[0.0, 0.0]])
    """

    params_per_element = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        self._check_params(x, params)
        # squeeze, not params[..., 0]: a view whose backward is a view too (no zero-filled gradient).
        return x + params.squeeze(-1), torch.zeros_like(x, dtype=torch.promote_types(x.dtype, torch.float32))

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        self._check_params(y, params)
        return y - params.squeeze(-1), torch.zeros_like(y, dtype=torch.promote_types(y.dtype, torch.float32))


class AffineTransform(MonotoneTransform):
    r"""The affine map ``y = (x + t) * s`` (or ``y = x * s + t``) with two parameters per element.

    The parameters are a shift ``t`` and a raw scale. ``"exp"``: :math:`s = \exp(\text{raw})`
    with ``raw`` bounded by :func:`soft_clamp`, so zero parameters are the identity. ``"sigmoid"``:
    :math:`s = \sigma(\text{raw} + 2) + \epsilon` (Glow's), run by :func:`flowkit.kernels.fused_affine`
    when the shift comes first and no ``keep`` mask is given. Glow, SRFlow and LLFlow shift first;
    RealNVP and MAF scale first, which trains better in :class:`~flowkit.recipes.RealNVP` and
    :class:`~flowkit.recipes.MAF` (:ref:`measured-design-choices`).

    Args:
        scale: ``"exp"`` or ``"sigmoid"``.
        clamp: the soft bound on ``|log s|`` for ``"exp"`` (positive, or ``None``).
        clamp_shape: ``"tanh"`` (default) or ``"rational"``, the :func:`soft_clamp` shape.
        eps: the floor added to the sigmoid scale.
        shift_first: ``y = (x + t) * s`` if true, ``y = x * s + t`` if false.

    Example:
        >>> import math, torch
        >>> from flowkit.transforms import AffineTransform
        >>> params = torch.tensor([[[1.0, math.log(2.0)]]])     # shift 1, scale 2
        >>> y, log_derivative = AffineTransform(clamp=None)(torch.tensor([[3.0]]), params)
        >>> y.item(), round(log_derivative.item(), 6) == round(math.log(2.0), 6)
        (8.0, True)
    """

    params_per_element = 2

    def __init__(
        self, scale: Literal["exp", "sigmoid"] = "exp", *, clamp: float | None = 3.0, eps: float = 1e-4,
        shift_first: bool = True, clamp_shape: Literal["tanh", "rational"] = "tanh",
    ) -> None:
        super().__init__()
        if scale not in ("exp", "sigmoid"):
            raise ValueError(f"AffineTransform: scale must be 'exp' or 'sigmoid', got {scale!r}")
        if clamp_shape not in _CLAMP_SHAPES:
            raise ValueError(f"AffineTransform: clamp_shape must be 'tanh' or 'rational', got {clamp_shape!r}")
        if clamp is not None and not clamp > 0:
            raise ValueError(f"AffineTransform: clamp must be positive or None, got {clamp}")
        if not eps >= 0:
            raise ValueError(f"AffineTransform: eps must be >= 0, got {eps}")
        self.scale = scale
        self.clamp = clamp
        self.eps = eps
        self.shift_first = bool(shift_first)
        self.clamp_shape = clamp_shape
        self._fused = scale == "sigmoid" and self.shift_first  # the fused op's form

    def extra_repr(self) -> str:
        if self.scale == "exp":
            text = f"scale='exp', clamp={self.clamp}" + (", clamp_shape='rational'" if self.clamp_shape == "rational" else "")
        else:
            text = f"scale='sigmoid', eps={self.eps}"
        return text if self.shift_first else text + ", shift_first=False"

    def _log_scale(self, raw: Tensor) -> Tensor:
        if self.scale == "exp":
            return soft_clamp(raw, self.clamp, self.clamp_shape)
        return torch.log(torch.sigmoid(raw + 2.0) + self.eps)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        self._check_params(x, params)
        # unbind, not params[..., 0] and params[..., 1]: the backward stacks the two gradients into
        # one tensor, where two selects would each zero-fill a tensor of params' size and add them.
        shift, raw = params.unbind(-1)
        log_scale = self._log_scale(raw)
        if self.shift_first:
            return (x + shift) * torch.exp(log_scale), log_scale
        return x * torch.exp(log_scale) + shift, log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        self._check_params(y, params)
        shift, raw = params.unbind(-1)
        log_scale = self._log_scale(raw)
        if self.shift_first:
            return y * torch.exp(-log_scale) - shift, -log_scale
        return (y - shift) * torch.exp(-log_scale), -log_scale

    def map(
        self, x: Tensor, h: Tensor, *, inverse: bool = False, keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if self._fused and keep is None:
            self._check_packed(h, x)
            return fused_affine(x, h, eps=self.eps, layout="cross", inverse=inverse)
        return super().map(x, h, inverse=inverse, keep=keep)

    def map_joined(self, passive: Tensor, x: Tensor, h: Tensor, *, inverse: bool = False) -> tuple[Tensor, Tensor]:
        """:meth:`MonotoneTransform.map_joined`, in one op where the fused form applies (see above)."""
        if self._fused:
            self._check_packed(h, x)
            return fused_affine_coupling(passive, x, h, eps=self.eps, layout="cross", inverse=inverse)
        return super().map_joined(passive, x, h, inverse=inverse)


class RationalQuadraticSpline(MonotoneTransform):
    r"""The monotone rational-quadratic spline of Neural Spline Flows (Durkan et al., 2019).

    On ``[-bound, bound]`` the map is a spline of ``bins`` rational-quadratic pieces through
    increasing knots :math:`(x^{(k)}, y^{(k)})` with derivatives :math:`\delta^{(k)} > 0`; outside it
    is the identity, with derivative 1 at both ends. In bin :math:`k`, with :math:`s_k = h_k / w_k`
    and :math:`\xi = (x - x^{(k)}) / w_k`:

    .. math::
        f(x) = y^{(k)} + \frac{h_k \left[s_k \xi^2 + \delta^{(k)} \xi (1 - \xi)\right]}
                              {s_k + \left[\delta^{(k+1)} + \delta^{(k)} - 2 s_k\right] \xi (1 - \xi)}.

    **Parameters** (``3 * bins - 1`` per element, in this order): ``bins`` widths and ``bins``
    heights (softmax, then floored), and ``bins - 1`` inner-knot derivatives
    :math:`\delta = \delta_{\min} + \text{softplus}(\text{raw} + b)`, with :math:`b` such that zero
    parameters are the identity. nflows' raw derivatives are these plus
    :math:`\log(e^{1 - \delta_{\min}} - 1)`; otherwise the map is nflows' spline with linear tails.

    Args:
        bins: number of bins ``K`` (>= 1).
        bound: the spline acts on ``[-bound, bound]``, the identity elsewhere.
        min_bin_width: smallest bin width, as a fraction of ``2 * bound``; ``bins * min_bin_width < 1``.
        min_bin_height: smallest bin height, likewise.
        min_derivative: smallest knot derivative, in ``(0, 1)``.
        bin_logit_scale: the factor on the widths' and heights' logits before the softmax; below 1
            the bins train more slowly. :class:`~flowkit.recipes.NSF` keeps 1
            (:ref:`measured-design-choices`).

    References:
        C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. Neural Spline Flows. NeurIPS 2019.

    Example:
        >>> import torch
        >>> from flowkit.transforms import RationalQuadraticSpline
        >>> spline = RationalQuadraticSpline(bins=4, bound=3.0)
        >>> x = torch.tensor([[-5.0, 0.3, 2.0]])
        >>> params = torch.randn(1, 3, spline.params_per_element)
        >>> y, log_derivative = spline(x, params)
        >>> y[0, 0].item()                        # a tail: the identity
        -5.0
        >>> torch.allclose(spline.inverse(y, params)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        bins: int = 8,
        bound: float = 5.0,
        *,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
        bin_logit_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"RationalQuadraticSpline: bins must be an integer >= 1, got {bins!r}")
        if not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"RationalQuadraticSpline: bound must be positive and finite, got {bound}")
        for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
            if not 0 <= value * bins < 1:
                raise ValueError(
                    f"RationalQuadraticSpline: {name} must be in [0, 1/bins) = [0, {1 / bins:.4g}) "
                    f"so that {bins} bins fit, got {value}"
                )
        if not 0 < min_derivative < 1:
            raise ValueError(
                f"RationalQuadraticSpline: min_derivative must be in (0, 1) (the identity has "
                f"derivative 1), got {min_derivative}"
            )
        if not (math.isfinite(bin_logit_scale) and bin_logit_scale > 0):
            raise ValueError(
                f"RationalQuadraticSpline: bin_logit_scale must be positive and finite, got {bin_logit_scale}"
            )
        self.bins = bins
        self.bound = float(bound)
        self.bin_logit_scale = float(bin_logit_scale)
        self.min_bin_width = min_bin_width
        self.min_bin_height = min_bin_height
        self.min_derivative = min_derivative
        self.params_per_element = 3 * bins - 1
        # softplus(0 + offset) = 1 - min_derivative, so that zero raw derivatives give 1.
        self._derivative_offset = math.log(math.expm1(1.0 - min_derivative))

    def extra_repr(self) -> str:
        text = f"bins={self.bins}, bound={self.bound}"
        return text if self.bin_logit_scale == 1.0 else f"{text}, bin_logit_scale={self.bin_logit_scale:g}"

    def _bin_table(self, params: Tensor, dtype: torch.dtype) -> Tensor:
        """Per bin ``(x_left, width, y_left, height, delta_left, delta_right)``: shape ``(..., K, 6)``."""
        k = self.bins
        # split (not slicing) and one table gathered once: their gradients are a concatenation and
        # one scatter, where slices and six gathers would each zero-fill a full-size gradient.
        raw_widths, raw_heights, raw_derivatives = params.to(dtype).split([k, k, k - 1], dim=-1)
        columns = []
        for raw, minimum in ((raw_widths, self.min_bin_width), (raw_heights, self.min_bin_height)):
            if self.bin_logit_scale != 1.0:
                raw = raw * self.bin_logit_scale
            fraction = minimum + (1.0 - minimum * k) * torch.softmax(raw, dim=-1)
            size = 2 * self.bound * fraction
            # Left edges by an exclusive cumulative sum: the first is exactly -bound; the right end
            # matches bound up to rounding, where the identity tail takes over (see _clamped).
            columns += [torch.cumsum(size, dim=-1) - size - self.bound, size]
        inner = self.min_derivative + F.softplus(raw_derivatives + self._derivative_offset)
        ones = inner.new_ones((*inner.shape[:-1], 1))
        columns += [torch.cat([ones, inner], dim=-1), torch.cat([inner, ones], dim=-1)]
        return torch.stack(columns, dim=-1)

    @staticmethod
    def _within_bin(xi: Tensor, slope: Tensor, d0: Tensor, d1: Tensor) -> tuple[Tensor, Tensor]:
        """``((f(x) - y0) / h, log f'(x))`` at the relative position ``xi`` in a bin."""
        rest = 1 - xi
        xi2, rest2, cross = xi * xi, rest * rest, xi * rest
        # s + (d0 + d1 - 2s) xi (1 - xi), regrouped as a sum of positive terms: no cancellation
        # when s is large against the knot derivatives.
        denominator = slope * (xi2 + rest2) + (d0 + d1) * cross
        rise = (slope * xi2 + d0 * cross) / denominator
        log_derivative = torch.log(d1 * xi2 + 2 * slope * cross + d0 * rest2) + 2 * torch.log(slope / denominator)
        return rise, log_derivative

    def _bin_of(self, params: Tensor, value: Tensor, by_output: bool) -> tuple[Tensor, ...]:
        """``(x0, width, y0, height, d0, d1)`` of the bin holding each (clamped) element of ``value``."""
        table = self._bin_table(params, value.dtype)
        left_edges = table[..., 2 if by_output else 0]
        # The bin index is the number of inner knots at or below the value: no searchsorted, so it
        # traces into one fused comparison under torch.compile.
        index = (value.unsqueeze(-1) >= left_edges[..., 1:]).sum(dim=-1)
        picked = table.gather(-2, index[..., None, None].expand(*index.shape, 1, 6))
        return picked[..., 0, :].unbind(-1)

    def _clamped(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` in the compute dtype, clamped to ``[-bound, bound]``; and where it was inside."""
        self._check_params(x, params)
        xc = x.to(compute_dtype(x))
        # Evaluating the spline at the clamped value keeps the tail elements finite, so that the
        # torch.where of _with_tails does not pass NaN gradients from the branch it discards.
        # x = bound itself counts as the tail, whose value (bound) is exact.
        return xc.clamp(-self.bound, self.bound), (xc >= -self.bound) & (xc < self.bound)

    @staticmethod
    def _with_tails(inside: Tensor, spline: Tensor, x: Tensor, log_derivative: Tensor) -> tuple[Tensor, Tensor]:
        """The spline's value inside, the identity (log-derivative 0) in the tails."""
        tail_log_derivative = torch.zeros_like(log_derivative)
        spline = torch.where(inside, spline, x.to(spline.dtype))
        return spline.to(x.dtype), torch.where(inside, log_derivative, tail_log_derivative)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        xs, inside = self._clamped(x, params)
        x0, w, y0, h, d0, d1 = self._bin_of(params, xs, by_output=False)
        rise, log_derivative = self._within_bin((xs - x0) / w, h / w, d0, d1)
        return self._with_tails(inside, y0 + h * rise, x, log_derivative)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        ys, inside = self._clamped(y, params)
        x0, w, y0, h, d0, d1 = self._bin_of(params, ys, by_output=True)
        slope = h / w
        above = ys - y0
        curvature = d0 + d1 - 2 * slope
        a = h * (slope - d0) + above * curvature
        b = h * d0 - above * curvature
        c = -slope * above
        discriminant = (b.square() - 4 * a * c).clamp_min(0)
        # The root in [0, 1], written as 2c / (-b - sqrt(.)) rather than (-b + sqrt(.)) / 2a: the
        # textbook form cancels catastrophically (and divides by ~0) where the bin is nearly linear.
        xi = (2 * c / (-b - torch.sqrt(discriminant))).clamp(0, 1)
        return self._with_tails(inside, x0 + xi * w, y, -self._within_bin(xi, slope, d0, d1)[1])
