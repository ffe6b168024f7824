"""The logit pre-processing of data in [0, 1] (RealNVP, Glow), with its log-determinant."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit._validation import check_no_cond
from flowkit.core import Flow

__all__ = ["Logit"]


class Logit(Flow):
    r"""Maps data in ``[0, 1]`` to the real line: :math:`y = \operatorname{logit}(\alpha + (1 - 2\alpha) x)`.

    .. math:: \log\left|\frac{dy}{dx}\right| = \sum_i \log(1 - 2\alpha) - \log p_i - \log(1 - p_i),
              \qquad p_i = \alpha + (1 - 2\alpha) x_i.

    Put it first in a flow on data in ``[0, 1]`` (dequantized pixels), so that the couplings see
    unbounded values. Inputs outside ``[0, 1]`` are not checked (a device sync) and give NaN.

    Args:
        alpha: the margin in ``[0, 0.5)`` that keeps 0 and 1 finite (RealNVP: 0.05 on CIFAR-10);
            0 gives the plain logit.

    Example:
        >>> import torch
        >>> from flowkit.layers import Logit
        >>> layer = Logit(alpha=0.0)
        >>> y, logdet = layer(torch.tensor([[0.5, 0.25]]))
        >>> [round(v, 4) for v in y[0].tolist()], round(logdet.item(), 4)    # log 4 + log(16/3)
        ([0.0, -1.0986], 3.0603)
    """

    conditional = False

    def __init__(self, *, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"Logit: alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha
        self._log_range = math.log1p(-2 * alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("Logit", cond)
        p = self.alpha + (1 - 2 * self.alpha) * x
        log_p, log_q = torch.log(p), torch.log1p(-p)
        log_derivative = self._log_range - log_p - log_q
        return log_p - log_q, log_derivative.flatten(1).sum(1).to(torch.promote_types(x.dtype, torch.float32))

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_cond("Logit", cond)
        x = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        # log sigma'(y) = log sigma(y) + log sigma(-y) = -softplus(-y) - softplus(y)
        log_derivative = -F.softplus(-y) - F.softplus(y) - self._log_range
        return x, log_derivative.flatten(1).sum(1).to(torch.promote_types(y.dtype, torch.float32))
