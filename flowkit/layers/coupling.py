"""Coupling layers: some elements drive an invertible element-wise map of the others.

The elements that pass through are a split or mask of the channels (:class:`Coupling`) or a spatial
checkerboard (:class:`CheckerboardCoupling`); the others get any
:class:`~flowkit.transforms.MonotoneTransform`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from flowkit._validation import check_channels, check_cond, check_no_cond
from flowkit.core import Flow
from flowkit.layers._subnet import SubnetSpec, build_subnet, run_subnet
from flowkit.transforms import AdditiveTransform, AffineTransform, MonotoneTransform, transform_or_default

__all__ = [
    "AdditiveCoupling",
    "AffineCoupling",
    "CheckerboardCoupling",
    "Coupling",
    "alternating_mask",
]

MaskSpec = Sequence[bool] | Tensor | None


def alternating_mask(channels: int, parity: int = 0) -> Tensor:
    """A boolean mask over ``channels`` that is ``True`` at every other channel, from ``parity``.

    Pass it as a coupling's ``mask``, alternating ``parity`` so that every channel is transformed.

    Args:
        channels: the mask's length, the coupling's number of channels (or features).
        parity: 0 (default) for ``True`` at the even channels, 1 for the odd ones.

    Example:
        >>> from flowkit.layers import alternating_mask
        >>> alternating_mask(5).tolist(), alternating_mask(5, parity=1).tolist()
        ([True, False, True, False, True], [False, True, False, True, False])
    """
    if parity not in (0, 1):
        raise ValueError(f"alternating_mask: parity must be 0 or 1, got {parity}")
    return torch.arange(channels) % 2 == parity


def _passive_channels(name: str, channels: int, split: int | None, mask: MaskSpec) -> Tensor:
    """The boolean mask of the channels that pass through, from ``split`` or ``mask``."""
    if mask is None:
        split = channels // 2 if split is None else split
        if not 0 < split < channels:
            raise ValueError(
                f"{name}: split must leave channels on both sides (0 < split < {channels}), got {split}"
            )
        return torch.arange(channels) < split
    if split is not None:
        raise ValueError(f"{name}: give split or mask, not both (got split={split} and a mask)")
    passive = torch.as_tensor(mask)
    if passive.dtype != torch.bool or passive.shape != (channels,):
        raise ValueError(
            f"{name}: mask must be {channels} booleans (True: passed through), got "
            f"{passive.dtype} of shape {tuple(passive.shape)}"
        )
    if not 0 < int(passive.sum()) < channels:
        raise ValueError(f"{name}: mask must have both True and False entries, got {passive.tolist()}")
    return passive.clone()


class _Conditioned(Flow):
    """Shared wiring: a sub-network of the passed-through elements and ``cond`` (when conditional)."""

    def __init__(
        self, name: str, in_channels: int, cond_channels: int, out_channels: int, subnet: SubnetSpec
    ) -> None:
        super().__init__()
        if cond_channels < 0:
            raise ValueError(f"{name}: cond_channels must be >= 0, got {cond_channels}")
        self.name = name
        self.conditional = cond_channels > 0
        self.cond_channels = cond_channels
        self.subnet_out = out_channels
        # The default sub-network is convolutional; remembered to turn the error a vector input
        # would raise deep inside conv2d into one that says what to pass instead.
        self._image_subnet = subnet is None
        self.subnet = build_subnet(name, subnet, in_channels + cond_channels, out_channels)

    def _subnet_output(self, passive: Tensor, cond: Tensor | None, like: Tensor) -> Tensor:
        if self._image_subnet and passive.dim() != 4:
            raise ValueError(
                f"{self.name}'s default subnet is convolutional and expects images (B, C, H, W), got an "
                f"input of shape {tuple(like.shape)}; for vectors pass subnet=flowkit.nn.MLP "
                "(or any (in_features, out_features) -> nn.Module constructor)"
            )
        if self.cond_channels:
            check_cond(self.name, cond, self.cond_channels, passive)
            inputs = torch.cat([passive, cond.to(passive.dtype)], dim=1)
        else:
            check_no_cond(self.name, cond)
            inputs = passive
        return run_subnet(self.name, self.subnet, inputs, self.subnet_out, like)


class Coupling(_Conditioned):
    r"""A coupling with any element-wise monotone transform (affine, additive, spline, ...).

    The passive channels :math:`P` (``mask``, or the first ``split``) pass through and, with
    ``cond``, give the parameters of the map of the active channels :math:`A`:

    .. math::

        y_P = x_P, \qquad y_A = f(x_A; \theta), \qquad \theta = \mathrm{NN}(x_P, c),
        \qquad \log|\det J| = \sum_{i \in A} \log f'(x_i; \theta_i).

    With the default (zero-initialised) sub-networks a fresh layer is the identity, except for the
    sigmoid-scaled affine transform. Use it to pick the transform, e.g. a
    :class:`~flowkit.transforms.RationalQuadraticSpline` for a neural spline flow.

    Args:
        channels: channels (images ``(B, C, H, W)``) or features (vectors ``(B, D)``) of ``x``.
        cond_channels: channels of ``cond`` (spatial size of ``x``), 0 (default) for none.
        transform: the element-wise map; default :class:`~flowkit.transforms.AffineTransform`.
        subnet: a module, a constructor ``(in_channels, out_channels) -> nn.Module``, or ``None``
            for :func:`flowkit.nn.conv_subnet` (images only; pass :class:`flowkit.nn.MLP` for
            vectors). It maps ``passive + cond_channels`` channels to ``params_per_element * active``.
        split: the first ``split`` channels pass through; default ``channels // 2``.
        mask: instead of ``split``, ``channels`` booleans, ``True`` where the channel passes
            through (e.g. :func:`alternating_mask`).

    Example:
        >>> import torch
        >>> from flowkit.layers import Coupling
        >>> from flowkit.nn import MLP
        >>> from flowkit.transforms import RationalQuadraticSpline
        >>> layer = Coupling(4, 2, transform=RationalQuadraticSpline(bins=8), subnet=MLP)
        >>> x, c = torch.randn(3, 4), torch.randn(3, 2)
        >>> y, logdet = layer(x, c)
        >>> torch.allclose(layer.inverse(y, c)[0], x, atol=1e-5), logdet.shape
        (True, torch.Size([3]))
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int = 0,
        *,
        transform: MonotoneTransform | None = None,
        subnet: SubnetSpec = None,
        split: int | None = None,
        mask: MaskSpec = None,
    ) -> None:
        name = type(self).__name__
        transform = transform_or_default(name, transform)
        passive = _passive_channels(name, channels, split, mask)
        n_passive = int(passive.sum())
        out_channels = transform.params_per_element * (channels - n_passive)
        super().__init__(name, n_passive, cond_channels, out_channels, subnet)
        self.transform = transform
        self.channels = channels
        self.split = n_passive
        self.active_channels = channels - n_passive
        passive_index, active_index = torch.nonzero(passive)[:, 0], torch.nonzero(~passive)[:, 0]
        # Contiguous blocks are sliced (views, no gather); any other mask gathers and scatters by index.
        self._blocks: Literal["first", "last", "index"] = (
            "first" if bool(passive[:n_passive].all()) else "last" if bool(passive[-n_passive:].all()) else "index"
        )
        order = torch.cat([passive_index, active_index])
        self.register_buffer("_passive_index", passive_index, persistent=False)
        self.register_buffer("_active_index", active_index, persistent=False)
        self.register_buffer("_merge_index", torch.argsort(order), persistent=False)

    def extra_repr(self) -> str:
        where = f"split={self.split}" if self._blocks == "first" else f"passive={self._passive_index.tolist()}"
        return f"{self.channels}, cond_channels={self.cond_channels}, {where}"

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(passive, active)`` channels of ``x``."""
        check_channels(self.name, x, self.channels)
        # torch.split, not two slices: the same views forward, but its backward concatenates the
        # halves' gradients into one tensor, where two slices would each zero-fill a tensor of x's
        # full size and then add the two.
        if self._blocks == "first":
            return torch.split(x, [self.split, self.active_channels], dim=1)
        if self._blocks == "last":
            active, passive = torch.split(x, [self.active_channels, self.split], dim=1)
            return passive, active
        return x[:, self._passive_index], x[:, self._active_index]

    def _couple(self, x: Tensor, cond: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        passive, active = self._halves(x)
        h = self._subnet_output(passive, cond, active)
        if self._blocks == "first":
            # The transform may write its output straight into the joined tensor (a fused kernel).
            return self.transform.map_joined(passive, active, h, inverse=inverse)
        y, logdet = self.transform.map(active, h, inverse=inverse)
        if self._blocks == "last":
            return torch.cat([y, passive], dim=1), logdet
        return torch.cat([passive, y], dim=1)[:, self._merge_index], logdet

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, cond, inverse=False)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(y, cond, inverse=True)


class CheckerboardCoupling(_Conditioned):
    r"""A coupling of images on a spatial checkerboard (RealNVP's first layers).

    With the checkerboard :math:`b_{hw} = [(h + w) \bmod 2 = \text{parity}]`, over all channels:

    .. math::

        y = b \odot x + (1 - b) \odot f(x; \theta), \qquad \theta = \mathrm{NN}(b \odot x, c).

    Use it at full resolution, before the first :class:`~flowkit.layers.Squeeze`, where an image
    has too few channels for a channel split; after it, a :class:`Coupling` is cheaper (this
    sub-network computes parameters for every pixel and half are discarded). Alternate ``parity``.

    Args:
        channels, cond_channels, transform, subnet: as for :class:`Coupling` (images only).
        parity: 0 (default) or 1, which colour of the checkerboard passes through.

    Example:
        >>> import torch
        >>> from flowkit.layers import CheckerboardCoupling
        >>> layer = CheckerboardCoupling(3, parity=1)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x)
        True
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int = 0,
        *,
        transform: MonotoneTransform | None = None,
        subnet: SubnetSpec = None,
        parity: int = 0,
    ) -> None:
        name = "CheckerboardCoupling"
        transform = transform_or_default(name, transform)
        if parity not in (0, 1):
            raise ValueError(f"{name}: parity must be 0 or 1, got {parity}")
        super().__init__(name, channels, cond_channels, transform.params_per_element * channels, subnet)
        self.channels = channels
        self.parity = parity
        self.transform = transform

    def extra_repr(self) -> str:
        return f"{self.channels}, cond_channels={self.cond_channels}, parity={self.parity}"

    def _passive(self, x: Tensor) -> Tensor:
        check_channels(self.name, x, self.channels)
        if x.dim() != 4:
            raise ValueError(f"{self.name} expects images (B, C, H, W), got shape {tuple(x.shape)}")
        rows = torch.arange(x.shape[2], device=x.device)
        columns = torch.arange(x.shape[3], device=x.device)
        return ((rows[:, None] + columns) % 2 == self.parity).view(1, 1, x.shape[2], x.shape[3])

    def _map(self, x: Tensor, cond: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        passive = self._passive(x)
        h = self._subnet_output(x * passive.to(x.dtype), cond, x)
        return self.transform.map(x, h, inverse=inverse, keep=passive)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._map(x, cond, inverse=False)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._map(y, cond, inverse=True)


class AffineCoupling(Coupling):
    r"""Affine coupling (RealNVP/Glow/SRFlow): :class:`Coupling` with an :class:`~flowkit.transforms.AffineTransform`.

    .. math::

        y_A = (x_A + t) \odot s, \qquad (t, \text{raw}) = \mathrm{NN}(x_P, c),

    with :math:`s = \sigma(\text{raw} + 2) + \epsilon` (``"sigmoid"``, Glow's; never expands by
    more than :math:`1 + \epsilon`) or :math:`s = \exp(c \tanh(\text{raw} / c))` (``"exp"``).
    Use it for Glow-style image flows and SRFlow/LLFlow weights.

    Args:
        channels, cond_channels, subnet, split, mask: as for :class:`Coupling`.
        scale: ``"sigmoid"`` (default) or ``"exp"``.
        eps: :math:`\epsilon`, the floor of the sigmoid scale (default ``1e-4``).
        clamp: :math:`c`, the soft bound on :math:`|\log s|` of the exp scale (default 3).

    Example:
        >>> import torch
        >>> from flowkit.layers import AffineCoupling
        >>> layer = AffineCoupling(4, 2)
        >>> x, c = torch.randn(3, 4, 8, 8), torch.randn(3, 2, 8, 8)
        >>> y, logdet = layer(x, c)
        >>> torch.allclose(layer.inverse(y, c)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int = 0,
        *,
        subnet: SubnetSpec = None,
        split: int | None = None,
        mask: MaskSpec = None,
        scale: Literal["sigmoid", "exp"] = "sigmoid",
        eps: float = 1e-4,
        clamp: float | None = 3.0,
    ) -> None:
        transform = AffineTransform(scale, clamp=clamp, eps=eps)
        super().__init__(channels, cond_channels, transform=transform, subnet=subnet, split=split, mask=mask)


class AdditiveCoupling(Coupling):
    r"""Additive coupling (NICE): :class:`Coupling` with the :class:`~flowkit.transforms.AdditiveTransform`.

    .. math::

        y_A = x_A + \mathrm{NN}(x_P, c), \qquad x_A = y_A - \mathrm{NN}(y_P, c), \qquad
        \log|\det J| = 0.

    Use it where a unit Jacobian is wanted; it is cheaper than :class:`AffineCoupling` but cannot rescale.

    Args:
        channels, cond_channels, subnet, split, mask: as for :class:`Coupling`.

    Example:
        >>> import torch
        >>> from flowkit.layers import AdditiveCoupling
        >>> from flowkit.nn import MLP
        >>> layer = AdditiveCoupling(4, subnet=MLP)
        >>> x = torch.randn(5, 4)
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x), logdet.abs().max().item()
        (True, 0.0)
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int = 0,
        *,
        subnet: SubnetSpec = None,
        split: int | None = None,
        mask: MaskSpec = None,
    ) -> None:
        super().__init__(channels, cond_channels, transform=AdditiveTransform(), subnet=subnet, split=split, mask=mask)
