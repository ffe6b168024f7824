r"""Autoregressive flows on vectors: MADE, the masked autoregressive flow (MAF) and its inverse (IAF).

A MADE (masked autoencoder for distribution estimation) is an MLP whose weight masks make output
``d`` depend only on the inputs that come before ``d`` in a chosen order. With it, the element-wise
parameters of feature ``d`` are a function of the features before it, and the Jacobian of
:math:`y_d = f(x_d; \theta_d(x_{<d}, c))` is triangular. One MADE pass evaluates every
:math:`\theta_d` at once; inverting needs ``D`` passes, one per feature in the order.
:class:`MaskedAutoregressive` puts the single pass on the density side (fast training, slow
sampling); :class:`InverseAutoregressive` puts it on the sampling side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._validation import check_channels, check_cond, check_no_cond
from flowkit.core import Flow
from flowkit.transforms import MonotoneTransform, transform_or_default

__all__ = ["MADE", "InverseAutoregressive", "MaskedAutoregressive"]

OrderSpec = Sequence[int] | Tensor | Literal["sequential", "reverse"]


class _MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (a buffer) on every call."""

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def _order_degrees(name: str, features: int, order: OrderSpec) -> Tensor:
    """Degree (1-based position in the autoregressive order) of each feature."""
    if isinstance(order, str):
        if order not in ("sequential", "reverse"):
            raise ValueError(f"{name}: order must be 'sequential', 'reverse' or a permutation, got {order!r}")
        sequence = torch.arange(features) if order == "sequential" else torch.arange(features - 1, -1, -1)
    else:
        sequence = torch.as_tensor(order)
        if sequence.shape != (features,) or sorted(sequence.tolist()) != list(range(features)):
            raise ValueError(
                f"{name}: order must be a permutation of range({features}) (the features in the order "
                f"they are generated), got {sequence.tolist()}"
            )
    degrees = torch.empty(features, dtype=torch.long)
    degrees[sequence] = torch.arange(1, features + 1)
    return degrees


class MADE(nn.Module):
    r"""A masked :class:`~flowkit.nn.MLP`: output block ``d`` depends only on the inputs before ``d`` in ``order``.

    The network maps ``x`` of shape ``(B, features)`` (and a conditioning ``(B, cond_features)``,
    which every hidden unit may see) to ``(B, features * out_per_feature)``, grouped by feature:
    outputs ``d * P`` to ``d * P + P - 1`` are feature ``d``'s, the layout that
    :mod:`flowkit.transforms` reads. Feature ``order[k]`` is the ``k``-th generated, so its
    outputs depend on the features ``order[:k]`` (and the conditioning) only.

    Every unit has a degree :math:`m`: input feature ``d`` its 1-based position in the order, a
    conditioning input 0, and hidden unit ``j`` of each layer ``1 + j mod (D - 1)`` (Germain et
    al., 2015), or ``j mod D`` with a conditioning (degree 0 reads it alone, and feeds the first
    feature). Layer :math:`l`'s weight is multiplied by a fixed 0/1 mask,

    .. math::

        M^{l}_{jk} = [\, m^{l}(j) \ge m^{l-1}(k) \,] \ \text{(hidden layers)}, \qquad
        M^{\text{out}}_{(d, p), k} = [\, m(d) > m^{L}(k) \,] \ \text{(output layer)},

    so every path from input :math:`k` to an output of feature :math:`d` has non-decreasing
    degrees and ends with a strict increase, which gives the autoregressive property

    .. math:: \frac{\partial\, \mathrm{MADE}(x, c)_{d, p}}{\partial x_k} = 0 \quad
              \text{unless} \quad m(k) < m(d).

    Every allowed connection exists as soon as the hidden layers have ``D - 1`` units (``D`` with
    a conditioning); :meth:`inputs_of` reads the dependencies off the masks. The hidden layers keep
    PyTorch's default initialisation; the output layer is zero-initialised (``zero_last``), so a
    flow built on a fresh MADE starts as the identity (for the exp-affine, additive and spline
    transforms).

    Use it as the conditioner of :class:`MaskedAutoregressive` and :class:`InverseAutoregressive`
    (which build one), or alone as an autoregressive model whose ``D`` conditionals come from one
    pass.

    Args:
        features: ``D``, the size of the ``(B, D)`` input, at least 1.
        out_per_feature: ``P``, outputs per feature, at least 1 (default 1).
        hidden_features, activation, zero_last: as for :class:`~flowkit.nn.MLP`.
        cond_features: size of the optional conditioning, 0 (default) for none; with one,
            :meth:`forward` requires a ``cond`` of shape ``(B, cond_features)``, and without,
            rejects one.
        order: ``"sequential"`` (default; feature 0 first), ``"reverse"``, or a permutation of
            ``range(D)`` listing the features in the order they are generated; anything else
            raises a :class:`ValueError`.

    References:
        M. Germain, K. Gregor, I. Murray, H. Larochelle. MADE: Masked Autoencoder for
        Distribution Estimation. ICML 2015.

    Example:
        >>> import torch
        >>> from flowkit.layers import MADE
        >>> made = MADE(3, 2, (16, 16), cond_features=1)
        >>> made(torch.randn(5, 3), torch.randn(5, 1)).shape
        torch.Size([5, 6])
        >>> [sorted(made.inputs_of(d)) for d in range(3)]       # feature d sees features < d
        [[], [0], [0, 1]]
    """

    def __init__(
        self,
        features: int,
        out_per_feature: int = 1,
        hidden_features: Sequence[int] = (64, 64),
        *,
        cond_features: int = 0,
        order: OrderSpec = "sequential",
        activation: Callable[[], nn.Module] = nn.ReLU,
        zero_last: bool = True,
    ) -> None:
        super().__init__()
        if features < 1 or out_per_feature < 1 or cond_features < 0:
            raise ValueError(
                "MADE expects features >= 1, out_per_feature >= 1 and cond_features >= 0, got "
                f"{features}, {out_per_feature} and {cond_features}"
            )
        hidden_features = tuple(int(h) for h in hidden_features)
        if any(h < 1 for h in hidden_features):
            raise ValueError(f"MADE: hidden layer widths must be positive, got {hidden_features}")
        self.features = features
        self.out_per_feature = out_per_feature
        self.cond_features = cond_features
        self.hidden_features = hidden_features
        degrees = _order_degrees("MADE", features, order)
        self.register_buffer("degrees", degrees)
        # The conditioning has degree 0: every hidden unit (degree >= 0) may read it.
        previous = torch.cat([degrees, torch.zeros(cond_features, dtype=torch.long)])
        layers: list[nn.Module] = []
        # Hidden degrees cycle through 1..D-1, and from 0 with a conditioning: units of degree 0
        # see it alone, and are what lets the first feature's parameters depend on it.
        lowest = 0 if cond_features else 1
        for width in hidden_features:
            hidden = lowest + torch.arange(width) % max(features - lowest, 1)
            layers += [_MaskedLinear(hidden[:, None] >= previous[None, :]), activation()]
            previous = hidden
        outputs = degrees.repeat_interleave(out_per_feature)
        last = _MaskedLinear(outputs[:, None] > previous[None, :])
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def extra_repr(self) -> str:
        return (
            f"{self.features}, out_per_feature={self.out_per_feature}, hidden_features={self.hidden_features}, "
            f"cond_features={self.cond_features}"
        )

    def inputs_of(self, feature: int) -> set[int]:
        """The input features that output block ``feature`` can depend on (by the masks).

        For checking the autoregressive property: with the default ``"sequential"`` order, output
        block ``d`` may depend only on features ``0 .. d - 1``.

        Args:
            feature: the index of the output block (of ``out_per_feature`` values), in
                ``range(features)``.
        """
        reach = torch.eye(self.features + self.cond_features, dtype=torch.float64)
        for layer in self.net:
            if isinstance(layer, _MaskedLinear):
                reach = (layer.mask.to(reach.dtype) @ reach).clamp_max(1)
        block = reach[feature * self.out_per_feature : (feature + 1) * self.out_per_feature, : self.features]
        return set(torch.nonzero(block.sum(0))[:, 0].tolist())

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Map ``x`` ``(B, features)`` (and ``cond``) to ``(B, features * out_per_feature)``, grouped by feature."""
        check_channels("MADE", x, self.features)
        if self.cond_features:
            check_cond("MADE", cond, self.cond_features, x)
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        else:
            check_no_cond("MADE", cond)
        return self.net(x)


class MaskedAutoregressive(Flow):
    r"""Masked autoregressive flow layer (MAF): :math:`y_d = f(x_d; \theta_d(x_{<d}, c))`.

    ``f`` is any element-wise :class:`~flowkit.transforms.MonotoneTransform` (affine: MAF of
    Papamakarios et al., 2017; a rational-quadratic spline: the autoregressive neural spline flow),
    and :math:`\theta = \mathrm{MADE}(\cdot, c)`, with :math:`x_{<d}` the features before ``d`` in
    ``order``:

    .. math::

        y_d = f(x_d; \theta_d(x_{<d}, c)), \qquad
        x_d = f^{-1}(y_d; \theta_d(x_{<d}, c)) \ \text{(in the order)}, \qquad
        \log|\det J| = \sum_d \log f'(x_d; \theta_d).

    The forward direction (data to latent, density evaluation) is one :class:`MADE` pass; the
    inverse (sampling) is ``D`` passes, each fixing one more feature in the order, the last of
    which also gives the exact log-determinant. Alternate ``order`` between stacked layers
    (``"sequential"``, ``"reverse"``) so that each feature is conditioned on the others somewhere
    in the flow. The MADE's last layer is zero-initialised, so a fresh layer is the identity (for
    the exp-affine, additive and spline transforms).

    Use it for density estimation on vectors: each feature is conditioned on all those before it,
    which is more expressive per layer than a coupling's half, at the price of sampling ``D``
    times slower than evaluating. For fast sampling use :class:`InverseAutoregressive`; for both
    directions in one pass, a :class:`~flowkit.layers.Coupling`.

    Args:
        features: ``D``, the size of the ``(B, D)`` input.
        cond_features: size of the ``(B, cond_features)`` conditioning; 0 (default) for an
            unconditional layer.
        transform: the element-wise map (default :class:`~flowkit.transforms.AffineTransform`, the
            exp scale soft-clamped at 3).
        hidden_features, order, activation, zero_last: the :class:`MADE`'s, with the same defaults
            (``zero_last=False`` draws the last layer like the others: see
            :class:`~flowkit.recipes.MAF` for when that trains better).

    References:
        G. Papamakarios, T. Pavlakou, I. Murray. Masked Autoregressive Flow for Density
        Estimation. NeurIPS 2017.

    Example:
        >>> import torch
        >>> from flowkit.layers import MaskedAutoregressive
        >>> from flowkit.testing import perturb_parameters
        >>> layer = MaskedAutoregressive(3, 2, hidden_features=(16,))
        >>> perturb_parameters(layer, 0.3)
        >>> x, c = torch.randn(4, 3), torch.randn(4, 2)
        >>> y, logdet = layer(x, c)
        >>> torch.allclose(layer.inverse(y, c)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        features: int,
        cond_features: int = 0,
        *,
        transform: MonotoneTransform | None = None,
        hidden_features: Sequence[int] = (64, 64),
        order: OrderSpec = "sequential",
        activation: Callable[[], nn.Module] = nn.ReLU,
        zero_last: bool = True,
    ) -> None:
        super().__init__()
        transform = transform_or_default(type(self).__name__, transform)
        self.conditional = cond_features > 0
        self.features = features
        self.transform = transform
        self.made = MADE(
            features, transform.params_per_element, hidden_features,
            cond_features=cond_features, order=order, activation=activation, zero_last=zero_last,
        )

    def extra_repr(self) -> str:
        return f"{self.features}, cond_features={self.made.cond_features}"

    def _one_pass(self, v: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """``f(v; theta(v))``: the direction a single MADE pass computes."""
        return self.transform.map(v, self.made(v, cond))

    def _sequential(self, v: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """Solve ``f(u; theta(u)) = v`` for ``u``: after pass ``k`` the first ``k`` features in the
        order are exact, so ``D`` passes give every feature and the exact log-determinant."""
        check_channels(type(self).__name__, v, self.features)
        u = torch.zeros_like(v)
        logdet = v.new_zeros(v.shape[0], dtype=torch.promote_types(v.dtype, torch.float32))
        for _ in range(self.features):
            u, logdet = self.transform.map(v, self.made(u, cond), inverse=True)
        return u, logdet

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._one_pass(x, cond)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._sequential(y, cond)


class InverseAutoregressive(MaskedAutoregressive):
    r"""Inverse autoregressive flow layer (IAF): the :class:`MaskedAutoregressive` map, reversed.

    Sampling (:meth:`inverse`, latent :math:`z` to data :math:`x`) is one MADE pass,
    :math:`x_d = f(z_d; \theta_d(z_{<d}, c))`; density evaluation (:meth:`forward`) solves the
    same relation for :math:`z` in ``D`` passes:

    .. math::

        z_d = f^{-1}(x_d; \theta_d(z_{<d}, c)) \ \text{(in the order)}, \qquad
        \log\left|\det \frac{\partial z}{\partial x}\right| = -\sum_d \log f'(z_d; \theta_d).

    Initialised as :class:`MaskedAutoregressive` (a fresh layer is the identity). Use it where a
    flow is sampled far more often than it is evaluated on given data (variational posteriors,
    the student of a distilled flow), or where the log-density is only needed for its own samples
    (the log-determinant of :meth:`inverse` comes with the single pass).

    Args: as for :class:`MaskedAutoregressive`.

    References:
        D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling. Improved
        Variational Inference with Inverse Autoregressive Flow. NeurIPS 2016.

    Example:
        >>> import torch
        >>> from flowkit.layers import InverseAutoregressive
        >>> layer = InverseAutoregressive(4, hidden_features=(8, 8))
        >>> z = torch.randn(2, 4)
        >>> x, logdet = layer.inverse(z)          # one pass
        >>> torch.allclose(layer(x)[0], z)        # D passes
        True
    """

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._sequential(x, cond)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._one_pass(y, cond)
