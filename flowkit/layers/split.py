"""Multi-scale factor-out (Glow's ``Split2d``) as bijections: :class:`Split` and :class:`FactorOut`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowkit._validation import check_channels, check_cond, check_no_cond
from flowkit.core import Flow
from flowkit.kernels.reference import split_shift_scale
from flowkit.layers._subnet import SubnetSpec, build_subnet, run_subnet
from flowkit.nn.subnets import ZeroConv2d

__all__ = ["FactorOut", "Split"]


class Split(Flow):
    r"""Standardises ``x2 = x[:, keep:]`` under a Gaussian predicted from ``x1 = x[:, :keep]``.

    With :math:`(\mu, \log\sigma) = \mathrm{NN}(x_1, c)` (``prior_net`` on ``cat[x1, cond]``):

    .. math::

        \text{forward:} \quad [x_1, x_2] \mapsto [x_1, \epsilon], \qquad
        \epsilon = (x_2 - \mu) \oslash \sigma, \qquad
        \log|\det J| = -\sum_i \log\sigma_i,

        \text{inverse:} \quad [x_1, \epsilon] \mapsto [x_1, \mu + \sigma \odot \epsilon].

    Under a standard-normal :math:`\epsilon` this is Glow's learned prior of the factored-out half,
    as a bijection (as in FrEIA and nflows). Use it in multi-scale image flows after a
    :class:`~flowkit.layers.Squeeze`, followed by a :class:`FactorOut` that sends only ``x1`` on.

    Args:
        channels: channels of the input ``(B, C, H, W)``.
        cond_channels: channels of ``cond`` (at ``x``'s resolution) the prior also sees; 0 for none.
        keep: channels kept as they are, ``0 < keep < channels`` (default ``channels // 2``).
        prior_net: a module or a constructor ``(in_channels, out_channels) -> nn.Module`` giving
            an interleaved (mean, log-std) pair per factored-out channel; ``None`` for a
            :class:`~flowkit.nn.ZeroConv2d` (the layer starts as the identity).

    Example:
        >>> import torch
        >>> from flowkit.layers import Split
        >>> split = Split(4)
        >>> x = torch.randn(2, 4, 3, 3)
        >>> y, logdet = split(x)
        >>> y.shape, torch.equal(y[:, :2], x[:, :2]), torch.allclose(split.inverse(y)[0], x)
        (torch.Size([2, 4, 3, 3]), True, True)
    """

    def __init__(
        self, channels: int, cond_channels: int = 0, *, keep: int | None = None, prior_net: SubnetSpec = None
    ) -> None:
        super().__init__()
        keep = channels // 2 if keep is None else keep
        if not 0 < keep < channels:
            raise ValueError(f"Split: keep must satisfy 0 < keep < {channels}, got {keep}")
        self.conditional = cond_channels > 0
        self.channels = channels
        self.keep = keep
        self.cond_channels = cond_channels
        self.prior_net = build_subnet("Split", ZeroConv2d if prior_net is None else prior_net, keep + cond_channels, 2 * (channels - keep))

    def extra_repr(self) -> str:
        return f"{self.channels}, keep={self.keep}, cond_channels={self.cond_channels}"

    def prior(self, x1: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(mean, log_std)`` of the factored-out half given the kept half ``x1`` (and ``cond``)."""
        check_channels("Split", x1, self.keep, what="kept half")
        if self.cond_channels:
            check_cond("Split", cond, self.cond_channels, x1)
            inputs = torch.cat([x1, cond.to(x1.dtype)], dim=1)
        else:
            check_no_cond("Split", cond)
            inputs = x1
        like = x1.new_empty(x1.shape[0], self.channels - self.keep, *x1.shape[2:])
        h = run_subnet("Split", self.prior_net, inputs, 2 * (self.channels - self.keep), like)
        return split_shift_scale(h, "cross")

    def _halves(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        check_channels("Split", x, self.channels)
        x1, x2 = torch.split(x, [self.keep, self.channels - self.keep], dim=1)  # one-tensor backward
        return x1, x2, *self.prior(x1, cond)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, x2, mean, log_std = self._halves(x, cond)
        logdet = -log_std.flatten(1).sum(1).to(torch.promote_types(x.dtype, torch.float32))
        return torch.cat([x1, (x2 - mean) * torch.exp(-log_std)], dim=1), logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y1, eps, mean, log_std = self._halves(y, cond)
        logdet = log_std.flatten(1).sum(1).to(torch.promote_types(y.dtype, torch.float32))
        return torch.cat([y1, mean + torch.exp(log_std) * eps], dim=1), logdet


class FactorOut(Flow):
    r"""Runs ``flow`` on the first ``keep`` channels and passes the other channels through.

    The routing of a multi-scale flow (nflows' ``MultiscaleCompositeTransform``): after a
    :class:`Split`, it sends only the kept half on, so the latent has the input's shape.

    Args:
        flow: the coarser levels; they must keep their input's shape (end a level that squeezes
            with ``flowkit.Inverse(Squeeze())``).
        keep: how many leading channels go to ``flow``.

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import ActNorm, FactorOut, Split, Squeeze
        >>> coarse = flowkit.Sequential(Squeeze(), ActNorm(8), flowkit.Inverse(Squeeze()))
        >>> flow = flowkit.Sequential(Squeeze(), ActNorm(4), Split(4), FactorOut(coarse, keep=2),
        ...                           flowkit.Inverse(Squeeze()))
        >>> z, logdet = flow(torch.randn(3, 1, 8, 8))
        >>> z.shape
        torch.Size([3, 1, 8, 8])
    """

    def __init__(self, flow: Flow, keep: int) -> None:
        super().__init__()
        if not isinstance(flow, Flow):
            raise TypeError(f"FactorOut expects a flowkit.Flow, got {type(flow).__name__}")
        if keep < 1:
            raise ValueError(f"FactorOut: keep must be at least 1, got {keep}")
        self.flow = flow
        self.keep = keep

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return self.flow.conditional

    def extra_repr(self) -> str:
        return f"keep={self.keep}"

    def _route(self, x: Tensor, run: Callable[..., tuple[Tensor, Tensor]], cond: Tensor | None) -> tuple[Tensor, Tensor]:
        if x.dim() < 2 or x.shape[1] <= self.keep:
            raise ValueError(f"FactorOut(keep={self.keep}) expects more than {self.keep} channels, "
                             f"got a tensor of shape {tuple(x.shape)}")
        x1, x2 = torch.split(x, [self.keep, x.shape[1] - self.keep], dim=1)
        y1, logdet = run(x1, cond)
        if y1.shape != x1.shape:
            raise ValueError(
                f"FactorOut: its flow must keep the shape of the channels it gets, but maps {tuple(x1.shape)} "
                f"to {tuple(y1.shape)}; end a level that squeezes with flowkit.Inverse(Squeeze())"
            )
        return torch.cat([y1, x2], dim=1), logdet

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._route(x, self.flow, cond)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._route(y, self.flow.inverse, cond)
