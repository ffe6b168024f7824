"""Complete (conditional) flows built from sizes alone: RealNVP, NSF and MAF on vectors, Glow on images.

Each recipe is a :class:`flowkit.FlowModel` whose flow is an ordinary :class:`flowkit.Sequential`
of public layers, so it can be inspected, sliced and changed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

from torch import nn

from flowkit.core import Flow, Inverse, Sequential, WithCond
from flowkit.distributions import DiagGaussian, StandardNormal
from flowkit.flow_model import FlowModel
from flowkit.layers import (
    ActNorm,
    AffineCoupling,
    Coupling,
    FactorOut,
    InvConv1x1,
    MaskedAutoregressive,
    Split,
    Squeeze,
)
from flowkit.nn.subnets import MLP, conv_subnet
from flowkit.transforms import AffineTransform, MonotoneTransform, RationalQuadraticSpline

__all__ = ["MAF", "NSF", "Glow", "RealNVP"]


def _check_vector_sizes(
    recipe: str, features: int, cond_features: int, transforms: int, minimum_features: int = 1
) -> None:
    if not isinstance(features, int) or features < minimum_features:
        hint = (" (a coupling transforms some features given the others; for 1-D data use MAF or NSF)"
                if minimum_features > 1 else "")
        raise ValueError(f"{recipe} expects features >= {minimum_features}{hint}, got {features!r}")
    if cond_features < 0 or transforms < 1:
        raise ValueError(
            f"{recipe} expects cond_features >= 0 and transforms >= 1, got cond_features={cond_features}, "
            f"transforms={transforms}"
        )


def _half_masks(features: int, transforms: int) -> list[list[bool]]:
    """Alternately the first and the second half of the features pass through."""
    first = [i < features // 2 for i in range(features)]
    return [first if t % 2 == 0 else [not b for b in first] for t in range(transforms)]


def _couplings(
    features: int, cond_features: int, transforms: int, hidden_features: Sequence[int],
    activation: Callable[[], nn.Module], transform: Callable[[], MonotoneTransform],
) -> Sequential:
    subnet = functools.partial(MLP, hidden_features=tuple(hidden_features), activation=activation)
    return Sequential(*(
        Coupling(features, cond_features, transform=transform(), subnet=subnet, mask=mask)
        for mask in _half_masks(features, transforms)
    ))


def _autoregressive(
    features: int, cond_features: int, transforms: int, hidden_features: Sequence[int],
    activation: Callable[[], nn.Module], transform: Callable[[], MonotoneTransform], zero_last: bool = True,
) -> Sequential:
    # Alternating the order lets each feature condition the others somewhere in the chain.
    return Sequential(*(
        MaskedAutoregressive(
            features, cond_features, transform=transform(), hidden_features=hidden_features,
            order="sequential" if t % 2 == 0 else "reverse", activation=activation, zero_last=zero_last,
        )
        for t in range(transforms)
    ))


def _scale_then_shift() -> AffineTransform:
    # Not the library's default (shift first, 3 tanh(raw / 3)): the papers' form and zuko's bound
    # trained to lower NLLs (docs/performance.rst, "Measured design choices").
    return AffineTransform(shift_first=False, clamp=math.log(1e3), clamp_shape="rational")


class RealNVP(FlowModel):
    r"""RealNVP on vectors: affine couplings on alternating halves of the features (Dinh et al., 2017).

    ``transforms`` :class:`~flowkit.layers.Coupling` layers with the affine map in the paper's form
    ``y = x * s + t``, its log-scale bounded by zuko's ``"rational"``
    :func:`~flowkit.transforms.soft_clamp` (:math:`c = \log 1000`; :ref:`measured-design-choices`).
    The prior is :math:`\mathcal N(0, I)`; a fresh model is the identity flow.

    Args:
        features: size ``D >= 2`` of the ``(B, D)`` data.
        cond_features: size of the ``(B, cond_features)`` conditioning, 0 for none.
        transforms: number of couplings.
        hidden_features: hidden widths of each coupling's :class:`~flowkit.nn.MLP`.
        activation: constructor of the MLPs' nonlinearity.

    Example:
        >>> import torch
        >>> from flowkit.recipes import RealNVP
        >>> model = RealNVP(2, 1, transforms=4, hidden_features=(32, 32))
        >>> x, c = torch.randn(8, 2), torch.randn(8, 1)
        >>> model.log_prob(x, c).shape, model.sample(cond=c).shape
        (torch.Size([8]), torch.Size([8, 2]))
    """

    def __init__(
        self,
        features: int,
        cond_features: int = 0,
        *,
        transforms: int = 4,
        hidden_features: Sequence[int] = (64, 64),
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        _check_vector_sizes("RealNVP", features, cond_features, transforms, minimum_features=2)
        flow = _couplings(features, cond_features, transforms, hidden_features, activation, _scale_then_shift)
        super().__init__(flow, StandardNormal((features,)))


class MAF(FlowModel):
    r"""Masked autoregressive flow on vectors (Papamakarios et al., 2017).

    ``transforms`` :class:`~flowkit.layers.MaskedAutoregressive` layers with alternating orders and
    the affine map and bound of :class:`RealNVP`. Sampling takes ``features`` passes per layer. Unlike
    the other recipes, a fresh MAF is not the identity (``zero_last=False``, as the paper and zuko):
    it is zuko's ``MAF`` of the same sizes (:ref:`measured-design-choices`).

    Args:
        features: size ``D`` of the ``(B, D)`` data.
        cond_features: size of the ``(B, cond_features)`` conditioning, 0 for none.
        transforms: number of autoregressive layers.
        hidden_features: hidden widths of each MADE.
        activation: constructor of the MADEs' nonlinearity.

    Example:
        >>> import torch
        >>> from flowkit.recipes import MAF
        >>> model = MAF(3, 2, transforms=2, hidden_features=(16, 16))
        >>> model.log_prob(torch.randn(4, 3), torch.randn(4, 2)).shape
        torch.Size([4])
    """

    def __init__(
        self,
        features: int,
        cond_features: int = 0,
        *,
        transforms: int = 3,
        hidden_features: Sequence[int] = (64, 64),
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        _check_vector_sizes("MAF", features, cond_features, transforms)
        flow = _autoregressive(
            features, cond_features, transforms, hidden_features, activation, _scale_then_shift, zero_last=False
        )
        super().__init__(flow, StandardNormal((features,)))


class NSF(FlowModel):
    r"""Neural spline flow on vectors: rational-quadratic spline transforms (Durkan et al., 2019).

    By default :class:`MAF` with a :class:`~flowkit.transforms.RationalQuadraticSpline`; with
    ``coupling=True``, :class:`~flowkit.layers.Coupling` layers on alternating halves (RQ-NSF (C)),
    which sample in one pass per layer. Standardise the data: the spline is the identity outside
    ``[-bound, bound]``.

    Args:
        features: size ``D`` of the ``(B, D)`` data (``D >= 2`` with ``coupling=True``).
        cond_features: size of the ``(B, cond_features)`` conditioning, 0 for none.
        transforms: number of layers.
        hidden_features: hidden widths of each MADE or coupling MLP.
        bins: spline bins.
        bound: the spline's interval is ``[-bound, bound]``.
        coupling: couplings instead of autoregressive layers.
        activation: constructor of the networks' nonlinearity.

    Example:
        >>> import torch
        >>> from flowkit.recipes import NSF
        >>> model = NSF(2, 1, transforms=3, hidden_features=(32, 32), bins=8)
        >>> x, log_prob = model.sample(cond=torch.randn(5, 1), return_log_prob=True)
        >>> x.shape, log_prob.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        features: int,
        cond_features: int = 0,
        *,
        transforms: int = 3,
        hidden_features: Sequence[int] = (64, 64),
        bins: int = 8,
        bound: float = 5.0,
        coupling: bool = False,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        _check_vector_sizes("NSF", features, cond_features, transforms, minimum_features=2 if coupling else 1)
        RationalQuadraticSpline(bins, bound)  # validates the settings before anything is built
        spline = functools.partial(RationalQuadraticSpline, bins, bound)
        build = _couplings if coupling else _autoregressive
        flow = build(features, cond_features, transforms, hidden_features, activation, spline)
        super().__init__(flow, StandardNormal((features,)))


class Glow(FlowModel):
    r"""Multi-scale Glow on images (Kingma & Dhariwal, 2018), optionally conditional.

    Each of ``levels`` levels is a :class:`~flowkit.layers.Squeeze`, ``steps`` steps
    (:class:`~flowkit.layers.ActNorm`, :class:`~flowkit.layers.InvConv1x1`, a coupling) and, but for
    the last level, a :class:`~flowkit.layers.Split` and a :class:`~flowkit.layers.FactorOut` that
    runs the next levels on half of the channels. The latent has the input's shape; the prior is a
    learned :class:`~flowkit.distributions.DiagGaussian`. A conditioning image
    ``(B, cond_channels, H, W)`` is average-pooled to each level's resolution.

    Args:
        input_shape: ``(C, H, W)``; ``H`` and ``W`` divisible by ``2 ** levels``.
        cond_channels: channels of the conditioning image, 0 for none.
        levels: number of levels (squeezes).
        steps: flow steps per level.
        hidden_channels: hidden widths of the coupling sub-networks (:func:`~flowkit.nn.conv_subnet`).
        split_priors: factor out half of the channels after every level but the last.
        transform: ``None`` for Glow's sigmoid-scaled :class:`~flowkit.layers.AffineCoupling`, or
            an element-wise transform for a :class:`~flowkit.layers.Coupling` (e.g. a spline).

    Example:
        >>> import torch
        >>> from flowkit.recipes import Glow
        >>> model = Glow((3, 8, 8), 1, levels=2, steps=2, hidden_channels=(16, 16))
        >>> model.latent_shape
        (3, 8, 8)
        >>> model.nll(torch.rand(2, 3, 8, 8), torch.randn(2, 1, 8, 8)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        cond_channels: int = 0,
        *,
        levels: int = 3,
        steps: int = 8,
        hidden_channels: Sequence[int] = (128, 128),
        split_priors: bool = True,
        transform: MonotoneTransform | None = None,
    ) -> None:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            raise ValueError(
                f"Glow is a flow on images: input_shape must be (C, H, W), got {shape}; for vectors "
                "use flowkit.recipes.RealNVP, NSF or MAF"
            )
        if levels < 1 or steps < 1 or cond_channels < 0:
            raise ValueError(
                f"Glow expects levels >= 1, steps >= 1 and cond_channels >= 0, got {levels}, {steps} and {cond_channels}"
            )
        channels, height, width = shape
        factor = 2**levels
        if height % factor or width % factor:
            raise ValueError(
                f"Glow with {levels} levels halves the resolution {levels} times: H and W must be divisible "
                f"by {factor}, got input_shape {shape}"
            )
        subnet = functools.partial(conv_subnet, hidden_channels=hidden_channels)
        widths = []  # the channels of each level's steps
        for _ in range(levels):
            channels *= 4
            widths.append(channels)
            channels //= 2 if split_priors else 1
        flow: Flow | None = None
        for width in reversed(widths):  # coarsest first: each level holds the coarser ones
            layers: list[Flow] = [Squeeze()]
            for _ in range(steps):
                coupling: Flow = (AffineCoupling(width, cond_channels, subnet=subnet) if transform is None
                                  else Coupling(width, cond_channels, transform=transform, subnet=subnet))
                layers += [ActNorm(width), InvConv1x1(width), coupling]
            if flow is not None and split_priors:
                layers += [Split(width, cond_channels), FactorOut(flow, width // 2)]
            elif flow is not None:
                layers.append(flow)
            chain = Sequential(*layers, Inverse(Squeeze()))
            # Each level sees the conditioning image at its own resolution, pooled once more per level.
            flow = WithCond(chain, nn.AvgPool2d(2)) if cond_channels else chain
        assert flow is not None  # levels >= 1
        super().__init__(flow, DiagGaussian(shape))
        self.input_shape = shape
        #: Shape ``(C, H, W)`` of the latent, the prior's shape: the input's.
        self.latent_shape = shape
