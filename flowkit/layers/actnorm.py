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

    With :math:`b_k` = ``bias[k]`` and :math:`\ell_k` = ``logs[k]`` for channel :math:`k`, and
    :math:`N` the number of positions per channel (``H * W`` for images, 1 for vectors):

    .. math::

        y_k = (x_k + b_k)\, e^{\ell_k}, \qquad x_k = y_k\, e^{-\ell_k} - b_k, \qquad
        \log|\det J| = N \sum_k \ell_k.

    The parameters start at zero (the identity) and are set from the first batch seen in training
    mode so that ``y`` has zero mean and standard deviation ``scale`` per channel (Glow's
    data-dependent initialisation, described with :class:`~flowkit.nn.ActivationNorm`, the plain
    module this layer extends); :meth:`initialize_from` does the same on demand, and the buffer
    ``initialized`` (saved in ``state_dict``) records it.

    Use it where Glow does, first in each flow step, to normalise activations without the batch
    dependence of batch normalisation at sampling time; give the first training batch a
    representative size, since it fixes the initial scale.

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
