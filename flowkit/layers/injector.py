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

    Because shift and scale do not depend on ``x``, the Jacobian is diagonal for *every*
    channel, and the map inverts in closed form:

    .. math::

        y = (x + t) \odot s, \qquad x = y \oslash s - t, \qquad
        \log|\det J| = \sum_i \log s_i, \qquad (t, \text{raw}) = \mathrm{NN}(c),

    the sigmoid-scaled :class:`~flowkit.transforms.AffineTransform` with the sub-network's output
    interleaved per channel (shift, raw scale). SRFlow calls this the conditional affine injector;
    LLFlow's coupling steps apply one (``fFeatures``) before their coupling. A fresh layer with the
    default sub-network has shift 0 and the constant scale :math:`\sigma(2) + \epsilon \approx 0.881`.

    Use it to feed a conditioning image into every channel of the flow at once; an
    :class:`AffineCoupling` with ``cond_channels`` transforms only the active channels, but
    lets the map depend on ``x`` as well.

    Args:
        channels: channels of the input ``x`` (``(B, C, *spatial)``).
        cond_channels: channels of ``cond``, at least 1 (the layer is always conditional);
            ``cond`` must have ``x``'s batch and spatial size.
        subnet: as for :class:`~flowkit.layers.Coupling`; it maps ``cond_channels`` to
            ``2 * channels`` channels.
        eps: :math:`\epsilon`, the floor added to the sigmoid scale (default ``1e-4``).

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
