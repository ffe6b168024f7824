"""Multi-scale factor-out (Glow's ``Split2d``) with a learned, optionally conditional, Gaussian prior."""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit._validation import check_channels, check_cond, check_no_cond
from flowkit.core import Flow
from flowkit.distributions import diag_gaussian_log_prob
from flowkit.kernels.reference import split_shift_scale
from flowkit.layers._subnet import SubnetSpec, build_subnet, run_subnet
from flowkit.nn.subnets import ZeroConv2d

__all__ = ["Split"]


class Split(Flow):
    r"""Factors out ``x2 = x[:, keep:]`` and models it with a Gaussian given ``x1 = x[:, :keep]``.

    ``forward(x)`` returns ``(x1, log p(x2 | x1, cond))``: the second element is the
    log-density of the factored-out half under the prior
    :math:`\mathcal N(\mu, \sigma^2)` with ``(mu, log sigma) = prior_net(cat[x1, cond])``, which
    plays the role of a log-determinant in the total (Glow's convention): for a flow ending in
    latent ``z``, ``log p(x) = log p(z) + sum(logdets)``. The output has fewer channels than the
    input, so this layer is *not* a bijection on its own; :meth:`factor` and :meth:`merge` are,
    and :func:`flowkit.testing.check_flow` checks them through :meth:`bijection`. In equations,
    with :math:`(\mu, \log\sigma) = \mathrm{NN}(x_1, c)`:

    .. math::

        \text{forward:} \quad x \mapsto x_1, \qquad
        \log \mathcal N(x_2; \mu, \sigma^2) = \log \mathcal N(\epsilon; 0, I) - \sum_i \log\sigma_i,
        \qquad \epsilon = (x_2 - \mu) \oslash \sigma,

        \text{inverse:} \quad x_1 \mapsto [x_1, \mu + \sigma \odot T \epsilon], \qquad
        \epsilon \sim \mathcal N(0, I), \qquad
        \text{logdet} = -\log \mathcal N(x_2; \mu, \sigma^2).

    ``inverse(x1)`` samples :math:`x_2 = \mu + T \sigma \epsilon` with temperature
    ``T = self.temperature`` (1.0 by default; :meth:`flowkit.FlowModel.sample` sets it) and an
    optional ``generator``, or uses a given standardised ``eps`` via :meth:`merge`; it returns the
    negative log-density of the sampled ``x2`` under the prior (at ``T = 1``).

    ``prior_net`` (a module, a constructor, or ``None`` for a zero-initialised 3x3
    :class:`~flowkit.nn.ZeroConv2d`, so the prior starts as the standard normal) maps
    ``keep + cond_channels`` channels to ``2 * (channels - keep)`` channels: means, then log-stds
    (``"half"`` layout).

    Use it in multi-scale image flows (Glow, SRFlow) after a :class:`~flowkit.layers.Squeeze` or
    :class:`~flowkit.layers.HaarDownsample`: the later steps then run on fewer channels, and the
    factored-out half gets a prior conditioned on the kept half instead of a fixed one.

    Args:
        channels: channels of the input ``(B, C, H, W)``.
        keep: channels kept and passed on, ``0 < keep < channels`` (default ``channels // 2``);
            the other ``channels - keep`` are factored out.
        cond_channels: channels of ``cond`` (``(B, cond_channels, H, W)``, at the resolution of
            ``x``) that the prior also sees, 0 (default) for an unconditional prior.
        prior_net: a module, a constructor ``(in_channels, out_channels) -> nn.Module``, or
            ``None`` (default) for ``ZeroConv2d(keep + cond_channels, 2 * (channels - keep))``.
        temperature: :math:`T`, the factor on the standard deviation when :meth:`inverse` samples
            (default 1; below 1 narrows the prior). It does not affect :meth:`forward`.

    Example:
        >>> import torch
        >>> from flowkit.layers import Split
        >>> split = Split(4)
        >>> x = torch.randn(2, 4, 3, 3)
        >>> x1, log_p = split(x)
        >>> x1.shape, log_p.shape
        (torch.Size([2, 2, 3, 3]), torch.Size([2]))
        >>> split.inverse(x1)[0].shape      # the factored half is sampled
        torch.Size([2, 4, 3, 3])
    """

    def __init__(
        self,
        channels: int,
        keep: int | None = None,
        cond_channels: int = 0,
        prior_net: SubnetSpec = None,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        keep = channels // 2 if keep is None else keep
        if not 0 < keep < channels:
            raise ValueError(f"Split: keep must satisfy 0 < keep < {channels}, got {keep}")
        self.conditional = cond_channels > 0
        self.channels = channels
        self.keep = keep
        self.cond_channels = cond_channels
        self.temperature = temperature
        self.prior_net = build_subnet("Split", ZeroConv2d if prior_net is None else prior_net, keep + cond_channels, 2 * (channels - keep))

    def extra_repr(self) -> str:
        return f"{self.channels}, keep={self.keep}, cond_channels={self.cond_channels}"

    def prior(self, x1: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(mean, log_std)`` of the factored-out half given the kept half.

        Args:
            x1: the kept half, ``(B, keep, H, W)``.
            cond: the conditioning, ``(B, cond_channels, H, W)``, for a conditional prior
                (required then), ``None`` otherwise.
        """
        check_channels("Split", x1, self.keep, what="kept half")
        if self.cond_channels:
            check_cond("Split", cond, self.cond_channels, x1)
            inputs = torch.cat([x1, cond.to(x1.dtype)], dim=1)
        else:
            check_no_cond("Split", cond)
            inputs = x1
        like = x1.new_empty(x1.shape[0], self.channels - self.keep, *x1.shape[2:])
        h = run_subnet("Split", self.prior_net, inputs, 2 * (self.channels - self.keep), like)
        return split_shift_scale(h, "half")

    def factor(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The bijective part: ``x -> (x1, eps)`` with ``eps = (x2 - mu) / sigma``; returns its logdet too.

        Args:
            x: the input, ``(B, channels, H, W)``.
            cond: the conditioning for a conditional prior, or ``None``.

        Returns:
            ``(x1, eps, logdet)``, with ``logdet = -sum(log sigma)`` per sample.
        """
        check_channels("Split", x, self.channels)
        x1, x2 = torch.split(x, [self.keep, self.channels - self.keep], dim=1)  # one-tensor backward
        mean, log_std = self.prior(x1, cond)
        eps = (x2 - mean) * torch.exp(-log_std)
        return x1, eps, -log_std.flatten(1).sum(1).to(torch.promote_types(x.dtype, torch.float32))

    def merge(self, x1: Tensor, eps: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Inverse of :meth:`factor`: ``x2 = mu + sigma * eps``; returns ``(x, logdet)``.

        Args:
            x1: the kept half, ``(B, keep, H, W)``.
            eps: the standardised factored-out half, the shape of the prior's mean
                (``(B, channels - keep, H, W)``); another shape raises a :class:`ValueError`.
            cond: the conditioning for a conditional prior, or ``None``.
        """
        mean, log_std = self.prior(x1, cond)
        if eps.shape != mean.shape:
            raise ValueError(f"Split.merge expects eps of shape {tuple(mean.shape)}, got {tuple(eps.shape)}")
        x2 = mean + torch.exp(log_std) * eps
        logdet = log_std.flatten(1).sum(1).to(torch.promote_types(x1.dtype, torch.float32))
        return torch.cat([x1, x2], dim=1), logdet

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, eps, logdet = self.factor(x, cond)
        return x1, logdet + diag_gaussian_log_prob(eps)

    def inverse(
        self, y: Tensor, cond: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        shape = (y.shape[0], self.channels - self.keep, *y.shape[2:])
        eps = torch.randn(shape, generator=generator, device=y.device, dtype=y.dtype) * self.temperature
        x, logdet = self.merge(y, eps, cond)
        return x, logdet - diag_gaussian_log_prob(eps)

    def bijection(self) -> Flow:
        """This layer's bijective part as a flow: ``x <-> cat[x1, eps]``, for conformance checks."""
        return _SplitBijection(self)


class _SplitBijection(Flow):
    def __init__(self, split: Split) -> None:
        super().__init__()
        self.split = split
        self.conditional = split.conditional

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, eps, logdet = self.split.factor(x, cond)
        return torch.cat([x1, eps], dim=1), logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep = self.split.keep
        y1, eps = torch.split(y, [keep, y.shape[1] - keep], dim=1)
        return self.split.merge(y1, eps, cond)
