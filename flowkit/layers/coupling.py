"""Coupling layers: some elements drive an invertible element-wise map of the others.

Which elements pass through (and condition the map) is a *mask*: a split of the channels (the
default: the first half), any fixed set of channels (:func:`alternating_mask` for vectors), or a
spatial checkerboard for images (:class:`CheckerboardCoupling`). What map the other elements get is
an element-wise :class:`~flowkit.transforms.MonotoneTransform`: :class:`Coupling` takes any of them
(a rational-quadratic spline gives a neural spline flow's coupling), and :class:`AffineCoupling`
and :class:`AdditiveCoupling` are the two classic ones with their own options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from flowkit._validation import check_channels, check_cond, check_no_cond
from flowkit.core import Flow, zero_logdet
from flowkit.kernels import fused_affine, fused_affine_coupling
from flowkit.kernels.reference import split_shift_scale
from flowkit.layers._subnet import SubnetSpec, build_subnet, run_subnet
from flowkit.transforms import MonotoneTransform, soft_clamp, transform_or_default

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

    Pass it as a coupling's ``mask`` (``True`` marks the channels that pass through and condition
    the rest); alternate ``parity`` from one coupling to the next so that every channel is
    transformed.

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
                f"input of shape {tuple(like.shape)}; for vectors pass subnet=flowkit.nn.mlp_subnet "
                "(or any (in_features, out_features) -> nn.Module constructor)"
            )
        if self.cond_channels:
            check_cond(self.name, cond, self.cond_channels, passive)
            inputs = torch.cat([passive, cond.to(passive.dtype)], dim=1)
        else:
            check_no_cond(self.name, cond)
            inputs = passive
        return run_subnet(self.name, self.subnet, inputs, self.subnet_out, like)


class _Coupling(_Conditioned):
    """Splits ``x`` along channels into a passive part (condition) and an active part (transformed)."""

    def __init__(
        self, name: str, channels: int, cond_channels: int, split: int | None, out_per_channel: int,
        subnet: SubnetSpec, mask: MaskSpec = None,
    ) -> None:
        passive = _passive_channels(name, channels, split, mask)
        n_passive = int(passive.sum())
        super().__init__(name, n_passive, cond_channels, out_per_channel * (channels - n_passive), subnet)
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
            passive, active = torch.split(x, [self.split, self.active_channels], dim=1)
            return passive, active
        if self._blocks == "last":
            active, passive = torch.split(x, [self.active_channels, self.split], dim=1)
            return passive, active
        return x[:, self._passive_index], x[:, self._active_index]

    def _join(self, passive: Tensor, active: Tensor) -> Tensor:
        """The inverse of :meth:`_halves`."""
        if self._blocks == "first":
            return torch.cat([passive, active], dim=1)
        if self._blocks == "last":
            return torch.cat([active, passive], dim=1)
        return torch.cat([passive, active], dim=1)[:, self._merge_index]


class Coupling(_Coupling):
    r"""A coupling with any element-wise monotone transform (affine, additive, spline, ...).

    The channels marked passive (``mask``, or the first ``split``; index set :math:`P`) pass
    through unchanged. The sub-network sees them (concatenated with ``cond`` when
    ``cond_channels > 0``) and outputs ``K = transform.params_per_element`` parameters per active
    channel (index set :math:`A`), with which ``transform`` maps the active channels:

    .. math::

        y_P = x_P, \qquad y_A = f(x_A; \theta), \qquad \theta = \mathrm{NN}(x_P, c),

        x_P = y_P, \qquad x_A = f^{-1}(y_A; \theta), \qquad \theta = \mathrm{NN}(y_P, c),

        \log|\det J| = \sum_{i \in A} \log f'(x_i; \theta_i).

    Both directions cost one sub-network pass, since the passive channels are known on either
    side. The sub-network's output has ``K * (channels - passive)`` channels, grouped by active
    channel (see :mod:`flowkit.transforms`). With a zero-initialised last layer (the default
    sub-networks, :func:`flowkit.nn.conv_subnet` and :func:`flowkit.nn.mlp_subnet`) a fresh layer
    is the identity for the exp-affine, additive and spline transforms, and a constant scale for
    the sigmoid-scaled affine one; a module passed as ``subnet`` keeps its own initialisation.

    Use it to pick the transform: a :class:`~flowkit.transforms.RationalQuadraticSpline` for a
    neural spline flow, or :class:`~flowkit.transforms.AffineTransform` with
    ``shift_first=False`` for RealNVP's scale-then-shift form. :class:`AffineCoupling` and
    :class:`AdditiveCoupling` are the fixed affine and additive cases (the former with Glow's
    sigmoid scale and SRFlow's ``"half"`` parameter layout).

    Args:
        channels: channels (images ``(B, C, H, W)``) or features (vectors ``(B, D)``) of ``x``.
        transform: the element-wise map, e.g. :class:`~flowkit.transforms.RationalQuadraticSpline`;
            default :class:`~flowkit.transforms.AffineTransform` (exp scale soft-clamped at 3).
        subnet: a module, a constructor ``(in_channels, out_channels) -> nn.Module``, or ``None``
            for :func:`flowkit.nn.conv_subnet` (images only; pass :func:`flowkit.nn.mlp_subnet`
            for vectors). It maps ``passive + cond_channels`` channels to
            ``K * (channels - passive)``; any other output shape raises a :class:`ValueError`.
        cond_channels: channels of ``cond`` (``(B, cond_channels, *spatial)``, the spatial size of
            ``x``), 0 for an unconditional layer.
        split: the first ``split`` channels pass through; ``0 < split < channels``, default
            ``channels // 2``.
        mask: instead of ``split`` (giving both is an error), ``channels`` booleans, ``True``
            where the channel passes through, with at least one of each value (e.g.
            :func:`alternating_mask`).

    Example:
        >>> import torch
        >>> from flowkit.layers import Coupling
        >>> from flowkit.nn import mlp_subnet
        >>> from flowkit.transforms import RationalQuadraticSpline
        >>> layer = Coupling(4, RationalQuadraticSpline(bins=8), mlp_subnet, cond_channels=2)
        >>> x, c = torch.randn(3, 4), torch.randn(3, 2)
        >>> y, logdet = layer(x, c)
        >>> torch.allclose(layer.inverse(y, c)[0], x, atol=1e-5), logdet.shape
        (True, torch.Size([3]))
    """

    def __init__(
        self,
        channels: int,
        transform: MonotoneTransform | None = None,
        subnet: SubnetSpec = None,
        cond_channels: int = 0,
        split: int | None = None,
        *,
        mask: MaskSpec = None,
    ) -> None:
        transform = transform_or_default("Coupling", transform)
        super().__init__("Coupling", channels, cond_channels, split, transform.params_per_element, subnet, mask)
        self.transform = transform

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, x2 = self._halves(x)
        y2, logdet = self.transform.map(x2, self._subnet_output(x1, cond, x2))
        return self._join(x1, y2), logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y1, y2 = self._halves(y)
        x2, logdet = self.transform.map(y2, self._subnet_output(y1, cond, y2), inverse=True)
        return self._join(y1, x2), logdet


class CheckerboardCoupling(_Conditioned):
    r"""A coupling of images on a spatial checkerboard (RealNVP's first layers).

    Pixels with ``(row + column) % 2 == parity`` pass through unchanged, in every channel; the
    sub-network sees the image with the other pixels zeroed (concatenated with ``cond``) and
    outputs ``K * channels`` channels of parameters at full resolution, of which those at the
    transformed pixels are used. With the checkerboard :math:`b_{hw} = [(h + w) \bmod 2 = \text{parity}]`
    (broadcast over channels) and :math:`\bar b = 1 - b`:

    .. math::

        y = b \odot x + \bar b \odot f(x; \theta), \qquad \theta = \mathrm{NN}(b \odot x, c),

        x = b \odot y + \bar b \odot f^{-1}(y; \theta), \qquad \theta = \mathrm{NN}(b \odot y, c),

        \log|\det J| = \sum_{k, h, w \,:\, b_{hw} = 0} \log f'(x_{khw}; \theta_{khw}).

    As for :class:`Coupling`, a fresh layer with the default (zero-initialised) sub-network is the
    identity for the exp-affine, additive and spline transforms. Any ``H`` and ``W`` are accepted;
    an input that is not 4-D raises a :class:`ValueError`.

    Use it at full resolution, before the first :class:`~flowkit.layers.Squeeze`, where an image
    has too few channels (3 for RGB) for a useful channel split. Its sub-network computes
    parameters for every pixel and half of them are discarded, so once the image is squeezed a
    channel :class:`Coupling` is the cheaper choice. Alternate ``parity`` between consecutive
    layers.

    Args:
        channels: channels of the ``(B, C, H, W)`` input.
        transform: as for :class:`Coupling` (default: the soft-clamped exp affine).
        subnet: as for :class:`Coupling` (default :func:`flowkit.nn.conv_subnet`); maps
            ``channels + cond_channels`` to ``K * channels`` channels.
        cond_channels: channels of the ``(B, cond_channels, H, W)`` conditioning, 0 for none.
        parity: 0 (default) or 1, which colour of the checkerboard passes through; any other value
            raises a :class:`ValueError`.

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
        transform: MonotoneTransform | None = None,
        subnet: SubnetSpec = None,
        cond_channels: int = 0,
        parity: int = 0,
    ) -> None:
        transform = transform_or_default("CheckerboardCoupling", transform)
        if parity not in (0, 1):
            raise ValueError(f"CheckerboardCoupling: parity must be 0 or 1, got {parity}")
        name = "CheckerboardCoupling"
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


class AffineCoupling(_Coupling):
    r"""Conditional affine coupling (RealNVP/Glow/SRFlow).

    ``x`` is split along channels into ``x1 = x[:, :split]`` (passed through) and
    ``x2 = x[:, split:]`` (or into the ``True`` and ``False`` channels of ``mask``). The
    sub-network sees ``x1`` (concatenated with ``cond`` when ``cond_channels > 0``) and outputs
    the shift :math:`t` and raw scale for ``x2``:

    .. math::

        y_1 = x_1, \qquad y_2 = (x_2 + t) \odot s, \qquad (t, s) = g(\mathrm{NN}(x_1, c)),

        x_1 = y_1, \qquad x_2 = y_2 \oslash s - t, \qquad (t, s) = g(\mathrm{NN}(y_1, c)),

        \log|\det J| = \sum_i \log s_i,

    where :math:`g` splits the sub-network's output into the shift and the raw scale (per
    ``layout``) and maps the raw scale to :math:`s`: with ``scale="sigmoid"``,
    :math:`s = \sigma(\text{raw} + 2) + \epsilon` (Glow/SRFlow/LLFlow,
    computed by :func:`flowkit.kernels.fused_affine`), or with ``scale="exp"``,
    :math:`s = \exp(c \tanh(\text{raw} / c))` with ``c = clamp`` (a soft-clamped exponential).

    ``subnet`` is a module, a constructor ``(in_channels, out_channels) -> nn.Module`` (as FrEIA's
    ``subnet_constructor``), or ``None`` for :func:`flowkit.nn.conv_subnet`. It maps
    ``split + cond_channels`` channels to ``2 * (channels - split)`` channels, laid out per
    ``layout``: ``"half"`` (shifts, then raw scales) or ``"cross"`` (interleaved, SRFlow/LLFlow).
    The default sub-network's last layer is zero-initialised, so a fresh layer has shift 0 and a
    constant scale: 1 with ``scale="exp"`` (the identity), :math:`\sigma(2) + \epsilon \approx 0.881`
    with ``"sigmoid"``. ``mask`` replaces ``split`` by any set of passed-through channels, as for
    :class:`Coupling`.

    Use it for Glow-style image flows and to load SRFlow/LLFlow weights (their layouts and sigmoid
    scale); the sigmoid scale lies in :math:`(\epsilon, 1 + \epsilon)`, so the forward map never
    expands an element by more than :math:`1 + \epsilon`. For a spline or a scale-then-shift map use
    :class:`Coupling`; for a volume-preserving map, :class:`AdditiveCoupling`.

    Args:
        channels: channels (images ``(B, C, H, W)``) or features (vectors ``(B, D)``) of ``x``.
        subnet: a module, a constructor ``(in_channels, out_channels) -> nn.Module``, or ``None``
            (default) for :func:`flowkit.nn.conv_subnet`, which takes images only (pass
            :func:`flowkit.nn.mlp_subnet` for vectors).
        cond_channels: channels of ``cond`` (``(B, cond_channels, *spatial)``, the spatial size of
            ``x``), 0 (default) for an unconditional layer.
        split: the first ``split`` channels pass through; ``0 < split < channels``, default
            ``channels // 2``.
        scale: ``"sigmoid"`` (default) or ``"exp"``, the map from the raw scale to :math:`s`.
        layout: ``"half"`` (default) or ``"cross"``, where the shifts and raw scales sit in the
            sub-network's output (see :func:`flowkit.kernels.reference.split_shift_scale`).
        eps: :math:`\epsilon`, the floor added to the sigmoid scale (``scale="sigmoid"`` only;
            default ``1e-4``), which keeps :math:`\log s` above :math:`\log \epsilon`.
        clamp: :math:`c`, the soft bound on :math:`|\log s|` (``scale="exp"`` only; default 2).
        mask: instead of ``split`` (giving both is an error), ``channels`` booleans, ``True``
            where the channel passes through, with at least one of each value.

    Example:
        >>> import torch
        >>> from flowkit.layers import AffineCoupling
        >>> layer = AffineCoupling(4, cond_channels=2)
        >>> x, c = torch.randn(3, 4, 8, 8), torch.randn(3, 2, 8, 8)
        >>> y, logdet = layer(x, c)
        >>> torch.allclose(layer.inverse(y, c)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        channels: int,
        subnet: SubnetSpec = None,
        cond_channels: int = 0,
        split: int | None = None,
        scale: Literal["sigmoid", "exp"] = "sigmoid",
        *,
        layout: Literal["half", "cross"] = "half",
        eps: float = 1e-4,
        clamp: float = 2.0,
        mask: MaskSpec = None,
    ) -> None:
        super().__init__("AffineCoupling", channels, cond_channels, split, 2, subnet, mask)
        if scale not in ("sigmoid", "exp"):
            raise ValueError(f"AffineCoupling: scale must be 'sigmoid' or 'exp', got {scale!r}")
        if layout not in ("half", "cross"):
            raise ValueError(f"AffineCoupling: layout must be 'half' or 'cross', got {layout!r}")
        self.scale = scale
        self.layout = layout
        self.eps = eps
        self.clamp = clamp

    def _affine(self, x2: Tensor, h: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        if self.scale == "sigmoid":
            return fused_affine(x2, h, eps=self.eps, layout=self.layout, inverse=inverse)
        shift, raw = split_shift_scale(h, self.layout)
        log_scale = soft_clamp(raw, self.clamp)
        logdet = log_scale.flatten(1).sum(1).to(torch.promote_types(x2.dtype, torch.float32))
        if inverse:
            return x2 * torch.exp(-log_scale) - shift, -logdet
        return (x2 + shift) * torch.exp(log_scale), logdet

    def _coupling(self, x: Tensor, cond: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        x1, x2 = self._halves(x)
        h = self._subnet_output(x1, cond, x2)
        if self.scale == "sigmoid" and self._blocks == "first":
            # The Triton path writes the transformed half straight into the joined output.
            return fused_affine_coupling(x1, x2, h, eps=self.eps, layout=self.layout, inverse=inverse)
        y2, logdet = self._affine(x2, h, inverse=inverse)
        return self._join(x1, y2), logdet

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._coupling(x, cond, inverse=False)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._coupling(y, cond, inverse=True)


class AdditiveCoupling(_Coupling):
    r"""Additive coupling (NICE): ``y2 = x2 + t(x1, cond)``, volume preserving (logdet 0).

    Same splitting (``split`` or ``mask``) and sub-network conventions as :class:`AffineCoupling`;
    the sub-network outputs one channel per transformed channel, the shift :math:`t`:

    .. math::

        y_1 = x_1, \qquad y_2 = x_2 + \mathrm{NN}(x_1, c),

        x_1 = y_1, \qquad x_2 = y_2 - \mathrm{NN}(y_1, c), \qquad \log|\det J| = 0.

    With the default (zero-initialised) sub-network a fresh layer is the identity. Use it where a
    constant Jacobian is wanted (NICE; a flow whose volume change is carried by other layers, such
    as :class:`~flowkit.layers.ActNorm`); it is cheaper but less expressive than
    :class:`AffineCoupling`, since it cannot rescale.

    Args:
        channels: channels (images ``(B, C, H, W)``) or features (vectors ``(B, D)``) of ``x``.
        subnet: a module, a constructor ``(in_channels, out_channels) -> nn.Module``, or ``None``
            (default) for :func:`flowkit.nn.conv_subnet` (images only); it maps
            ``split + cond_channels`` channels to ``channels - split``.
        cond_channels: channels of ``cond`` (``(B, cond_channels, *spatial)``), 0 (default) for
            none.
        split: the first ``split`` channels pass through; ``0 < split < channels``, default
            ``channels // 2``.
        mask: instead of ``split`` (giving both is an error), ``channels`` booleans, ``True``
            where the channel passes through, with at least one of each value.

    Example:
        >>> import torch
        >>> from flowkit.layers import AdditiveCoupling
        >>> from flowkit.nn import mlp_subnet
        >>> layer = AdditiveCoupling(4, subnet=mlp_subnet)
        >>> x = torch.randn(5, 4)
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x), logdet.abs().max().item()
        (True, 0.0)
    """

    def __init__(
        self,
        channels: int,
        subnet: SubnetSpec = None,
        cond_channels: int = 0,
        split: int | None = None,
        *,
        mask: MaskSpec = None,
    ) -> None:
        super().__init__("AdditiveCoupling", channels, cond_channels, split, 1, subnet, mask)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, x2 = self._halves(x)
        shift = self._subnet_output(x1, cond, x2)
        return self._join(x1, x2 + shift), zero_logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y1, y2 = self._halves(y)
        shift = self._subnet_output(y1, cond, y2)
        return self._join(y1, y2 - shift), zero_logdet(y)


