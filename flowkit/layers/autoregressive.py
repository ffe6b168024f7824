r"""Autoregressive flows on vectors: MADE, the masked autoregressive flow (MAF) and its inverse (IAF).

One MADE pass gives every :math:`\theta_d` of :math:`y_d = f(x_d; \theta_d(x_{<d}, c))`; inverting
takes ``D`` passes. :class:`MaskedAutoregressive` puts the single pass on the density side,
:class:`InverseAutoregressive` on the sampling side.
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

    It maps ``x`` ``(B, D)`` (and ``cond``, seen by every hidden unit) to ``(B, D * P)``, grouped
    by feature as :mod:`flowkit.transforms` reads it. With unit degrees :math:`m` (input ``d``: its
    1-based position in ``order``; hidden units cycle through them), the weight masks are

    .. math::

        M^{l}_{jk} = [\, m^{l}(j) \ge m^{l-1}(k) \,] \ \text{(hidden)}, \qquad
        M^{\text{out}}_{(d, p), k} = [\, m(d) > m^{L}(k) \,] \ \text{(output)},

    so that output :math:`d` depends on input :math:`k` only if :math:`m(k) < m(d)`
    (:meth:`inputs_of` reads this off the masks). The output layer starts at zero (``zero_last``).

    Args:
        features: ``D``, the size of the ``(B, D)`` input, at least 1.
        out_per_feature: ``P``, outputs per feature, at least 1 (default 1).
        hidden_features, activation, zero_last: as for :class:`~flowkit.nn.MLP`.
        cond_features: size of the optional conditioning ``(B, cond_features)``, 0 (default) for none.
        order: ``"sequential"`` (default; feature 0 first), ``"reverse"``, or a permutation of
            ``range(D)`` listing the features in the order they are generated.

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
        """The input features that output block ``feature`` can depend on (by the masks)."""
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

    ``f`` is any :class:`~flowkit.transforms.MonotoneTransform` and :math:`\theta` a :class:`MADE`;
    :math:`\log|\det J| = \sum_d \log f'(x_d; \theta_d)`. The forward (density) direction is one
    pass, the inverse (sampling) ``D`` passes. Use it for density estimation on vectors, alternating
    ``order`` between stacked layers; for fast sampling use :class:`InverseAutoregressive`.

    Args:
        features: ``D``, the size of the ``(B, D)`` input.
        cond_features: size of the ``(B, cond_features)`` conditioning; 0 (default) for none.
        transform: the element-wise map (default :class:`~flowkit.transforms.AffineTransform`).
        hidden_features, order, activation, zero_last: the :class:`MADE`'s.

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
        for _ in range(self.features):  # features >= 1 (MADE checks), so logdet is always set
            u, logdet = self.transform.map(v, self.made(u, cond), inverse=True)
        return u, logdet

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._one_pass(x, cond)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._sequential(y, cond)


class InverseAutoregressive(MaskedAutoregressive):
    r"""Inverse autoregressive flow layer (IAF): the :class:`MaskedAutoregressive` map, reversed.

    Sampling (:meth:`inverse`), :math:`x_d = f(z_d; \theta_d(z_{<d}, c))`, is one MADE pass;
    density evaluation (:meth:`forward`) takes ``D``. Use it where a flow is sampled far more often
    than evaluated on given data (variational posteriors).

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
