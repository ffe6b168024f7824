"""Coupling layers: half of the channels drive an invertible map of the other half."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from flowkit._validation import check_channels, check_cond, check_no_cond
from flowkit.core import Flow, zero_logdet
from flowkit.kernels import fused_affine
from flowkit.kernels.reference import split_shift_scale
from flowkit.layers._subnet import SubnetSpec, build_subnet, run_subnet

__all__ = ["AdditiveCoupling", "AffineCoupling"]


class _Coupling(Flow):
    """Shared wiring: split ``x`` into a passive part ``x1`` and an active part ``x2``."""

    def __init__(
        self, name: str, channels: int, cond_channels: int, split: int | None, out_per_channel: int,
        subnet: SubnetSpec,
    ) -> None:
        super().__init__()
        split = channels // 2 if split is None else split
        if not 0 < split < channels:
            raise ValueError(
                f"{name}: split must leave channels on both sides (0 < split < {channels}), got {split}"
            )
        if cond_channels < 0:
            raise ValueError(f"{name}: cond_channels must be >= 0, got {cond_channels}")
        self.name = name
        self.conditional = cond_channels > 0
        self.channels = channels
        self.cond_channels = cond_channels
        self.split = split
        self.active_channels = channels - split
        self.subnet_out = out_per_channel * self.active_channels
        self.subnet = build_subnet(name, subnet, split + cond_channels, self.subnet_out)

    def extra_repr(self) -> str:
        return f"{self.channels}, cond_channels={self.cond_channels}, split={self.split}"

    def _subnet_output(self, passive: Tensor, cond: Tensor | None, like: Tensor) -> Tensor:
        if self.cond_channels:
            check_cond(self.name, cond, self.cond_channels, passive)
            inputs = torch.cat([passive, cond.to(passive.dtype)], dim=1)
        else:
            check_no_cond(self.name, cond)
            inputs = passive
        return run_subnet(self.name, self.subnet, inputs, self.subnet_out, like)

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_channels(self.name, x, self.channels)
        return x[:, : self.split], x[:, self.split :]


class AffineCoupling(_Coupling):
    r"""Conditional affine coupling (RealNVP/Glow/SRFlow).

    ``x`` is split along channels into ``x1 = x[:, :split]`` (passed through) and
    ``x2 = x[:, split:]``. The sub-network sees ``x1`` (concatenated with ``cond`` when
    ``cond_channels > 0``) and outputs the shift and raw scale for ``x2``:

    .. math:: y_2 = (x_2 + t) \cdot s, \qquad \log|\det J| = \sum \log s,

    with ``scale="sigmoid"``: :math:`s = \sigma(\text{raw} + 2) + \epsilon` (Glow/SRFlow/LLFlow,
    computed by :func:`flowkit.kernels.fused_affine`), or ``scale="exp"``:
    :math:`s = \exp(c \tanh(\text{raw} / c))` with ``c = clamp`` (a soft-clamped exponential).

    ``subnet`` is a module, a constructor ``(in_channels, out_channels) -> nn.Module`` (as FrEIA's
    ``subnet_constructor``), or ``None`` for :func:`flowkit.nn.conv_subnet`. It maps
    ``split + cond_channels`` channels to ``2 * (channels - split)`` channels, laid out per
    ``layout``: ``"half"`` (shifts, then raw scales) or ``"cross"`` (interleaved, SRFlow/LLFlow).
    The default sub-network's last layer is zero-initialised, so a fresh layer has shift 0 and a
    constant scale: 1 with ``scale="exp"``, :math:`\sigma(2) + \epsilon \approx 0.881` with
    ``"sigmoid"``.

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
    ) -> None:
        super().__init__("AffineCoupling", channels, cond_channels, split, 2, subnet)
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
        log_scale = self.clamp * torch.tanh(raw / self.clamp)
        logdet = log_scale.flatten(1).sum(1).to(torch.promote_types(x2.dtype, torch.float32))
        if inverse:
            return x2 * torch.exp(-log_scale) - shift, -logdet
        return (x2 + shift) * torch.exp(log_scale), logdet

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, x2 = self._halves(x)
        h = self._subnet_output(x1, cond, x2)
        y2, logdet = self._affine(x2, h, inverse=False)
        return torch.cat([x1, y2], dim=1), logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y1, y2 = self._halves(y)
        h = self._subnet_output(y1, cond, y2)
        x2, logdet = self._affine(y2, h, inverse=True)
        return torch.cat([y1, x2], dim=1), logdet


class AdditiveCoupling(_Coupling):
    r"""Additive coupling (NICE): ``y2 = x2 + t(x1, cond)``, volume preserving (logdet 0).

    Same splitting and sub-network conventions as :class:`AffineCoupling`; the sub-network
    outputs ``channels - split`` channels.

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
    ) -> None:
        super().__init__("AdditiveCoupling", channels, cond_channels, split, 1, subnet)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, x2 = self._halves(x)
        shift = self._subnet_output(x1, cond, x2)
        return torch.cat([x1, x2 + shift], dim=1), zero_logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y1, y2 = self._halves(y)
        shift = self._subnet_output(y1, cond, y2)
        return torch.cat([y1, y2 - shift], dim=1), zero_logdet(y)


