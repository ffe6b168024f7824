"""Affine injector (SRFlow/LLFlow): an element-wise affine map whose parameters depend only on ``cond``."""

from __future__ import annotations

from torch import Tensor

from flowkit._validation import check_channels, check_cond
from flowkit.core import Flow
from flowkit.layers._subnet import SubnetSpec, build_subnet, run_subnet
from flowkit.transforms import AffineTransform

__all__ = ["AffineInjector"]


class AffineInjector(Flow):
    r"""``y = (x + t(cond)) * s(cond)`` with :math:`s = \sigma(\text{raw} + 2) + \epsilon`.

    .. math::

        y = (x + t) \odot s, \qquad \log|\det J| = \sum_i \log s_i, \qquad (t, \text{raw}) = \mathrm{NN}(c).

    Shift and scale do not depend on ``x``, so every channel is transformed (SRFlow's conditional
    affine injector). Use it to feed a conditioning image into every channel at once; an
    :class:`AffineCoupling` transforms only the active channels, but depends on ``x`` too.

    Args:
        channels: channels of the input ``x`` (``(B, C, *spatial)``).
        cond_channels: channels of ``cond`` (at ``x``'s spatial size), at least 1.
        subnet: as for :class:`~flowkit.layers.Coupling`; it maps ``cond_channels`` to ``2 * channels``.
        eps: :math:`\epsilon`, the floor added to the sigmoid scale.

    Example:
        >>> import torch
        >>> from flowkit.layers import AffineInjector
        >>> layer = AffineInjector(3, 5)
        >>> x, c = torch.randn(2, 3, 6, 6), torch.randn(2, 5, 6, 6)
        >>> y, logdet = layer(x, c)
        >>> torch.allclose(layer.inverse(y, c)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        *,
        subnet: SubnetSpec = None,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if cond_channels < 1:
            raise ValueError(f"AffineInjector needs cond_channels >= 1, got {cond_channels}")
        self.channels = channels
        self.cond_channels = cond_channels
        self.transform = AffineTransform("sigmoid", eps=eps)
        self.subnet = build_subnet("AffineInjector", subnet, cond_channels, 2 * channels)

    def extra_repr(self) -> str:
        return f"{self.channels}, cond_channels={self.cond_channels}"

    def _params(self, x: Tensor, cond: Tensor | None) -> Tensor:
        check_channels("AffineInjector", x, self.channels)
        check_cond("AffineInjector", cond, self.cond_channels, x)
        return run_subnet("AffineInjector", self.subnet, cond.to(x.dtype), 2 * self.channels, x)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.map(x, self._params(x, cond))

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.map(y, self._params(y, cond), inverse=True)
