"""``FlowModel``: a flow plus a latent prior, giving densities, NLLs and samples."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from flowkit._validation import check_finite
from flowkit.core import Flow

__all__ = ["FlowModel"]


class FlowModel(nn.Module):
    r"""A normalizing-flow density model: ``log p(x | cond) = log p_Z(f(x, cond)) + log|det J_f|``.

    Args:
        flow: the flow ``f`` (data to latent).
        prior: the latent distribution, e.g. :class:`~flowkit.distributions.StandardNormal` (any
            module with the interface of :mod:`flowkit.distributions`).
        dequantize: ``n_bins`` (e.g. 256 for 8-bit images in ``[0, 1]``): in training mode,
            :meth:`log_prob` adds ``U[0, 1/n_bins)`` noise and subtracts ``D log(n_bins)``.
        prior_uses_cond: pass ``cond`` on to the prior (a conditional prior).

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import ActNorm, AffineCoupling, InvConv1x1
        >>> from flowkit.distributions import StandardNormal
        >>> flow = flowkit.Sequential(ActNorm(4), InvConv1x1(4), AffineCoupling(4))
        >>> model = flowkit.FlowModel(flow, StandardNormal((4, 8, 8)))
        >>> x = torch.rand(2, 4, 8, 8)
        >>> model.nll(x).shape, model.sample(3).shape
        (torch.Size([2]), torch.Size([3, 4, 8, 8]))
    """

    def __init__(
        self, flow: Flow, prior: nn.Module, *, dequantize: int | None = None, prior_uses_cond: bool = False
    ) -> None:
        super().__init__()
        if dequantize is not None and dequantize < 1:
            raise ValueError(f"FlowModel: dequantize must be a positive number of bins, got {dequantize}")
        self.flow = flow
        self.prior = prior
        self.dequantize = dequantize
        self.prior_uses_cond = prior_uses_cond

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Per-sample log-density in nats of ``x`` ``(B, *event_shape)``, shape ``(B,)``."""
        check_finite("FlowModel.log_prob", x)
        correction = 0.0
        if self.dequantize is not None:
            if self.training:
                x = x + torch.rand_like(x) / self.dequantize
            correction = -math.prod(x.shape[1:]) * math.log(self.dequantize)
        z, logdet = self.flow(x, cond)
        return self.prior.log_prob(z, cond if self.prior_uses_cond else None) + logdet + correction

    def nll(self, x: Tensor, cond: Tensor | None = None, unit: Literal["bits/dim", "nats"] = "bits/dim") -> Tensor:
        """Per-sample negative log-likelihood, in nats or in bits per dimension, shape ``(B,)``.

        ``unit`` is ``"bits/dim"`` (default), ``-log p(x) / (D ln 2)`` with ``D`` the number of
        elements of one sample, or ``"nats"``.
        """
        nll = -self.log_prob(x, cond)
        if unit == "nats":
            return nll
        if unit == "bits/dim":
            return nll / (math.log(2) * math.prod(x.shape[1:]))
        raise ValueError(f"FlowModel.nll: unit must be 'bits/dim' or 'nats', got {unit!r}")

    @torch.no_grad()
    def sample(
        self,
        n: int | None = None,
        cond: Tensor | None = None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        return_log_prob: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        r"""Draw samples: ``n`` of them, or one per row of ``cond`` for a conditional model.

        ``temperature`` scales the prior's standard deviation, factored-out channels (a
        :class:`~flowkit.layers.Split`'s ``eps``) included: Glow's temperature at every level.

        Args:
            n: number of samples; optional when ``cond`` sets one per row.
            cond: the conditioning tensor, one row per sample, or ``None``.
            temperature: a finite number ``>= 0`` (0 decodes the means).
            generator: the random generator for the latent draws.
            return_log_prob: also return each sample's log-density from the same pass (at
                temperature 1, as :meth:`log_prob` in eval mode gives it).

        Example:
            >>> import torch, flowkit
            >>> from flowkit.layers import ActNorm
            >>> from flowkit.distributions import StandardNormal
            >>> model = flowkit.FlowModel(ActNorm(2), StandardNormal((2,))).eval()
            >>> x, log_prob = model.sample(4, return_log_prob=True)
            >>> torch.allclose(log_prob, model.log_prob(x))
            True
        """
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"FlowModel.sample: temperature must be a finite number >= 0, got {temperature!r}")
        if n is None:
            if cond is None:
                raise ValueError("FlowModel.sample needs n (unconditional) or cond (one sample per row)")
            n = cond.shape[0]
        elif isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"FlowModel.sample: n must be a positive int, got {n!r}")
        elif cond is not None and cond.shape[0] != n:
            raise ValueError(f"FlowModel.sample: n={n} but cond has {cond.shape[0]} rows (one sample per row)")
        prior_cond = cond if self.prior_uses_cond else None
        z = self.prior.sample(n, prior_cond, temperature=temperature, generator=generator)
        x, inverse_logdet = self.flow.inverse(z, cond)
        if not return_log_prob:
            return x
        correction = 0.0 if self.dequantize is None else -math.prod(x.shape[1:]) * math.log(self.dequantize)
        return x, self.prior.log_prob(z, prior_cond) - inverse_logdet + correction
