"""Latent priors: a standard normal and a (conditional) diagonal Gaussian."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit.kernels.reference import split_shift_scale

__all__ = ["DiagGaussian", "StandardNormal", "diag_gaussian_log_prob"]

LOG_2PI = math.log(2 * math.pi)


def diag_gaussian_log_prob(z: Tensor, mean: Tensor | float = 0.0, log_std: Tensor | float = 0.0) -> Tensor:
    r"""Per-sample :math:`\sum_i \log \mathcal N(z_i; \mu_i, e^{2 \log\sigma_i})`, shape ``(B,)``.

    Example:
        >>> import torch
        >>> from flowkit.distributions import diag_gaussian_log_prob
        >>> round(diag_gaussian_log_prob(torch.zeros(1, 2)).item(), 4)   # -log(2 pi)
        -1.8379
    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    z = z.to(dtype)
    log_std = torch.as_tensor(log_std, dtype=dtype, device=z.device)
    mean = torch.as_tensor(mean, dtype=dtype, device=z.device)
    squared = ((z - mean) * torch.exp(-log_std)) ** 2
    return (-0.5 * (squared + LOG_2PI) - log_std).expand_as(z).flatten(1).sum(1)


def _check_event(name: str, z: Tensor, event_shape: tuple[int, ...]) -> None:
    if tuple(z.shape[1:]) != event_shape:
        raise ValueError(
            f"{name} expects samples of shape (B, {', '.join(map(str, event_shape))}), "
            f"got {tuple(z.shape)}"
        )


class StandardNormal(nn.Module):
    """The standard normal :math:`\\mathcal N(0, I)` over tensors of shape ``event_shape``.

    Example:
        >>> import torch
        >>> from flowkit.distributions import StandardNormal
        >>> prior = StandardNormal((3, 4, 4))
        >>> z = prior.sample(2, temperature=0.5)
        >>> z.shape, prior.log_prob(z).shape
        (torch.Size([2, 3, 4, 4]), torch.Size([2]))
    """

    def __init__(self, event_shape: Sequence[int]) -> None:
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # tracks device/dtype

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        _check_event("StandardNormal", z, self.event_shape)
        return diag_gaussian_log_prob(z)

    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` samples of :math:`\\mathcal N(0, T^2 I)`."""
        shape = (n, *self.event_shape)
        eps = torch.randn(shape, generator=generator, device=self._anchor.device, dtype=self._anchor.dtype)
        return eps * temperature


class DiagGaussian(nn.Module):
    """A diagonal Gaussian whose mean and log-std are learned, or predicted from ``cond``.

    * With ``cond_net=None``: ``mean`` and ``log_std`` are parameters of shape ``event_shape``,
      initialised to the standard normal.
    * With ``cond_net``: ``cond_net(cond)`` returns ``2 * C`` channels, the mean and the log-std
      laid out per ``layout`` (``"half"``: means first; ``"cross"``: interleaved). Use
      :class:`flowkit.nn.ZeroConv2d` as its last layer to start from the standard normal.

    Example:
        >>> import torch
        >>> from flowkit.distributions import DiagGaussian
        >>> from flowkit.nn import ZeroConv2d
        >>> prior = DiagGaussian(cond_net=ZeroConv2d(2, 6))
        >>> cond = torch.randn(4, 2, 5, 5)
        >>> z = prior.sample(cond=cond, temperature=0.7)
        >>> z.shape, prior.log_prob(z, cond).shape
        (torch.Size([4, 3, 5, 5]), torch.Size([4]))
    """

    def __init__(
        self,
        event_shape: Sequence[int] | None = None,
        cond_net: nn.Module | None = None,
        layout: str = "half",
    ) -> None:
        super().__init__()
        if (event_shape is None) == (cond_net is None):
            raise ValueError("DiagGaussian needs exactly one of event_shape (learned) or cond_net (conditional)")
        self.cond_net = cond_net
        self.layout = layout
        if cond_net is None:
            self.event_shape = tuple(int(s) for s in event_shape)
            self.mean = nn.Parameter(torch.zeros(self.event_shape))
            self.log_std = nn.Parameter(torch.zeros(self.event_shape))

    def params(self, cond: Tensor | None = None, batch: int | None = None) -> tuple[Tensor, Tensor]:
        """The ``(mean, log_std)`` pair, batched when conditional."""
        if self.cond_net is None:
            if cond is not None:
                raise ValueError("DiagGaussian without cond_net is unconditional, but was given cond")
            return self.mean.unsqueeze(0), self.log_std.unsqueeze(0)
        if cond is None:
            raise ValueError("DiagGaussian with a cond_net expects a conditioning tensor, got None")
        out = self.cond_net(cond)
        if out.shape[1] % 2:
            raise ValueError(
                f"DiagGaussian: cond_net must output an even number of channels (mean, log-std), got {out.shape[1]}"
            )
        return split_shift_scale(out, self.layout)

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        mean, log_std = self.params(cond)
        if tuple(mean.shape[1:]) != tuple(z.shape[1:]):
            raise ValueError(
                f"DiagGaussian expects samples of shape (B, {', '.join(map(str, mean.shape[1:]))}), "
                f"got {tuple(z.shape)}"
            )
        return diag_gaussian_log_prob(z, mean, log_std)

    def sample(
        self,
        n: int | None = None,
        cond: Tensor | None = None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Samples of :math:`\\mathcal N(\\mu, T^2 \\sigma^2)`: ``n`` of them, or one per row of ``cond``."""
        mean, log_std = self.params(cond)
        if cond is None:
            if n is None:
                raise ValueError("DiagGaussian.sample needs n (unconditional) or cond")
            mean, log_std = mean.expand(n, *mean.shape[1:]), log_std.expand(n, *log_std.shape[1:])
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + temperature * torch.exp(log_std) * eps
