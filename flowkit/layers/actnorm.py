"""Activation normalisation (Glow): a per-channel affine map with data-dependent initialisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowkit._validation import check_channels, check_no_cond
from flowkit.core import Flow
from flowkit.nn.normalization import ActivationNorm

__all__ = ["ActNorm"]


class ActNorm(ActivationNorm, Flow):
    r"""Per-channel affine normalisation, ``y = (x + bias) * exp(logs)``.

    .. math:: \log|\det J| = N \sum_k \ell_k, \qquad \ell_k = \texttt{logs}[k],

    with :math:`N` the positions per channel. The first batch seen in training mode sets the
    parameters (Glow's data-dependent init; see :class:`~flowkit.nn.ActivationNorm`, which this layer
    extends), so give it a representative size. Use it first in each flow step, as Glow does.

    Args: ``channels`` and ``scale``, as for :class:`~flowkit.nn.ActivationNorm`.

    Example:
        >>> import torch
        >>> from flowkit.layers import ActNorm
        >>> norm = ActNorm(3)
        >>> y, logdet = norm(torch.randn(8, 3, 4, 4) * 5 + 2)   # initialises from this batch
        >>> bool(norm.initialized), round(y.mean().item(), 4) == 0.0
        (True, True)
    """

    conditional = False

    def _logdet(self, x: Tensor) -> Tensor:
        positions = math.prod(x.shape[2:])  # not x[0, 0].numel(): an empty batch has no x[0]
        value = self.logs.sum() * positions
        dtype = torch.promote_types(x.dtype, torch.float32)
        return value.to(dtype).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("ActNorm", cond)
        check_channels("ActNorm", x, self.channels)
        self._maybe_initialize(x)
        bias, logs = self._params_for(x)
        y = (x + bias) * torch.exp(logs)
        return y, self._logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("ActNorm", cond)
        check_channels("ActNorm", y, self.channels)
        bias, logs = self._params_for(y)
        x = y * torch.exp(-logs) - bias
        return x, -self._logdet(y)
