"""Latent priors: a standard normal, a (conditional) diagonal Gaussian, a Gaussian mixture, a uniform box.

Every prior has the interface :class:`flowkit.FlowModel` uses: ``log_prob(z, cond=None)``, shape
``(B,)``, and ``sample(n, cond=None, *, temperature=1.0, generator=None)``, ``n`` samples or one
per row of ``cond``, ``temperature`` scaling the standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit._validation import check_no_cond
from flowkit.kernels.reference import split_shift_scale

__all__ = ["BoxUniform", "DiagGaussian", "GaussianMixture", "StandardNormal", "diag_gaussian_log_prob"]

LOG_2PI = math.log(2 * math.pi)


def diag_gaussian_log_prob(z: Tensor, mean: Tensor | float = 0.0, log_std: Tensor | float = 0.0) -> Tensor:
    r"""Per-sample :math:`\sum_i \log \mathcal N(z_i; \mu_i, e^{2 \log\sigma_i})`, shape ``(B,)``.

    Args:
        z: the points, ``(B, ...)``; summed over all dimensions but the first, in float32 or wider.
        mean: :math:`\mu`, a number or a tensor broadcastable to ``z``.
        log_std: :math:`\log\sigma`, a number or a tensor broadcastable to ``z``.

    Example:
        >>> import torch
        >>> from flowkit.distributions import diag_gaussian_log_prob
        >>> round(diag_gaussian_log_prob(torch.zeros(1, 2)).item(), 4)   # -log(2 pi)
        -1.8379
    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    z = z.to(dtype)
    if not isinstance(mean, Tensor) and not isinstance(log_std, Tensor):
        # Numbers (the standard normal prior of every recipe): one reduction and a constant, in
        # four ops instead of two new tensors and ten ops on the hot path of training.
        centred = z - mean if mean else z
        constant = math.prod(z.shape[1:]) * (0.5 * LOG_2PI + log_std)
        return centred.flatten(1).square().sum(1) * (-0.5 * math.exp(-2.0 * log_std)) - constant
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
    r"""The standard normal :math:`\mathcal N(0, I)` over tensors of shape ``event_shape``.

    .. math:: \log p(z) = -\frac{1}{2} \sum_{i=1}^{D} \left(z_i^2 + \log 2\pi\right),

    over the ``D`` elements of one sample. The usual prior of an unconditional flow (for a learned
    or conditional Gaussian use :class:`DiagGaussian`).

    Args:
        event_shape: the shape of one sample, e.g. ``(3, 64, 64)``.

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
        """Per-sample log-density of ``z`` ``(B, *event_shape)``, shape ``(B,)``."""
        check_no_cond("StandardNormal", cond)
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
        """``n`` samples of :math:`\\mathcal N(0, T^2 I)`, shape ``(n, *event_shape)``."""
        check_no_cond("StandardNormal", cond)
        shape = (n, *self.event_shape)
        eps = torch.randn(shape, generator=generator, device=self._anchor.device, dtype=self._anchor.dtype)
        return eps * temperature


class DiagGaussian(nn.Module):
    r"""A diagonal Gaussian whose mean and log-std are learned, or predicted from ``cond``.

    .. math:: \log p(z \mid c) = \sum_i \left( -\frac{1}{2} \left(\frac{z_i - \mu_i}{\sigma_i}\right)^2
              - \log \sigma_i - \frac{1}{2} \log 2\pi \right),

    with :math:`(\mu, \log\sigma)` parameters of shape ``event_shape`` (starting at zero) or
    ``cond_net(cond)``. Use it when the prior should be learned (Glow's top prior) or depend on
    ``cond`` (then pass ``prior_uses_cond=True`` to :class:`~flowkit.FlowModel`).

    Args:
        event_shape: the shape of one sample, for the learned prior.
        cond_net: a module from ``cond`` to ``2 * C`` channels of means and log-stds, for the
            conditional prior (end it with :class:`flowkit.nn.ZeroConv2d` to start at
            :math:`\mathcal N(0, I)`). Give exactly one of ``event_shape`` and ``cond_net``.
        layout: how ``cond_net``'s output holds them: ``"half"`` (means first) or ``"cross"``
            (interleaved).

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

    def params(self, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(mean, log_std)``, each ``(1, *event_shape)`` when learned or ``(B, C, ...)`` from ``cond``."""
        if self.cond_net is None:
            check_no_cond("DiagGaussian without cond_net", cond)
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
        _check_event("DiagGaussian", z, tuple(mean.shape[1:]))
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


class GaussianMixture(nn.Module):
    r"""A mixture of ``components`` diagonal Gaussians, learned, and optionally conditional.

    .. math:: p(z \mid c) = \sum_k \pi_k(c)\, \mathcal N(z; \mu_k(c), \operatorname{diag} \sigma_k(c)^2)

    over ``event_shape`` tensors flattened to ``D`` values; the means start at random points. Use
    it as the prior of a small flow on data with separated modes.

    Args:
        event_shape: the shape of one sample, e.g. ``(2,)``.
        components: ``K``, at least 1.
        cond_net: ``None``, or a module from ``cond`` to ``(B, K (1 + 2 D))`` offsets *added* to
            the learned logits, means and log-stds, in that order (end it with
            :class:`flowkit.nn.ZeroLinear` to start from the unconditional mixture).
        generator: the random generator for the initial means.

    Example:
        >>> import torch
        >>> from flowkit.distributions import GaussianMixture
        >>> from flowkit.nn import ZeroLinear
        >>> prior = GaussianMixture((2,), components=3, cond_net=ZeroLinear(1, 3 * (1 + 2 * 2)))
        >>> cond = torch.randn(5, 1)
        >>> z = prior.sample(cond=cond)
        >>> z.shape, prior.log_prob(z, cond).shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        components: int = 8,
        cond_net: nn.Module | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if components < 1:
            raise ValueError(f"GaussianMixture expects components >= 1, got {components}")
        self.event_shape = tuple(int(s) for s in event_shape)
        self.components = components
        self.features = math.prod(self.event_shape)
        self.cond_net = cond_net
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, self.features, generator=generator))
        self.log_stds = nn.Parameter(torch.zeros(components, self.features))

    def extra_repr(self) -> str:
        return f"{self.event_shape}, components={self.components}"

    def params(self, cond: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(log_weights (B|1, K), means (B|1, K, D), log_stds (B|1, K, D))``, batched when conditional."""
        k, d = self.components, self.features
        logits, means, log_stds = self.logits[None], self.means[None], self.log_stds[None]
        if self.cond_net is None:
            check_no_cond("GaussianMixture without cond_net", cond)
        else:
            if cond is None:
                raise ValueError("GaussianMixture with a cond_net expects a conditioning tensor, got None")
            out = self.cond_net(cond)
            if tuple(out.shape) != (cond.shape[0], k * (1 + 2 * d)):
                raise ValueError(
                    f"GaussianMixture: cond_net must output shape ({cond.shape[0]}, {k * (1 + 2 * d)}) "
                    f"(K logits, K*D means, K*D log-stds for K={k}, D={d}), got {tuple(out.shape)}"
                )
            logits = logits + out[:, :k]
            means = means + out[:, k : k + k * d].view(-1, k, d)
            log_stds = log_stds + out[:, k + k * d :].view(-1, k, d)
        return torch.log_softmax(logits, dim=-1), means, log_stds

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        _check_event("GaussianMixture", z, self.event_shape)
        log_weights, means, log_stds = self.params(cond)
        batch, k, d = z.shape[0], self.components, self.features
        flat = z.reshape(batch, 1, d).expand(batch, k, d).reshape(batch * k, d)
        means, log_stds = means.expand(batch, k, d).reshape(batch * k, d), log_stds.expand(batch, k, d).reshape(batch * k, d)
        per_component = diag_gaussian_log_prob(flat, means, log_stds).view(batch, k)
        return torch.logsumexp(per_component + log_weights, dim=-1)

    def sample(
        self,
        n: int | None = None,
        cond: Tensor | None = None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw a component by its weight, then its Gaussian (``temperature`` leaves weights alone)."""
        log_weights, means, log_stds = self.params(cond)
        if cond is None:
            if n is None:
                raise ValueError("GaussianMixture.sample needs n (unconditional) or cond")
            log_weights = log_weights.expand(n, -1)
        index = torch.multinomial(log_weights.exp(), 1, generator=generator)  # (B, 1)
        pick = index[:, :, None].expand(-1, 1, self.features)
        mean = means.expand(index.shape[0], -1, -1).gather(1, pick)[:, 0]
        std = log_stds.expand(index.shape[0], -1, -1).gather(1, pick)[:, 0].exp()
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + temperature * std * eps).view(-1, *self.event_shape)


class BoxUniform(nn.Module):
    r"""The uniform distribution on the box ``[low, high)`` (element-wise bounds).

    .. math:: \log p(z) = \begin{cases} -\sum_i \log(h_i - l_i) & l_i \le z_i < h_i
              \text{ for every } i, \\ -\infty & \text{otherwise,} \end{cases}

    with :math:`l` = ``low`` and :math:`h` = ``high``; ``sample`` takes no temperature. The prior for
    flows that end in a bounded set (an :class:`~flowkit.Inverse` of :class:`~flowkit.layers.Logit`).

    Args:
        low: the lower corner, a tensor (or number) of the event shape.
        high: the upper corner, the same shape, above ``low`` everywhere (else :class:`ValueError`).

    Example:
        >>> import torch
        >>> from flowkit.distributions import BoxUniform
        >>> box = BoxUniform(torch.zeros(2), torch.tensor([1.0, 4.0]))
        >>> box.log_prob(torch.tensor([[0.5, 1.0], [2.0, 1.0]])).tolist()    # -log 4; outside
        [-1.3862943649291992, -inf]
        >>> box.sample(3).shape
        torch.Size([3, 2])
    """

    low: Tensor
    high: Tensor

    def __init__(self, low: Tensor | float, high: Tensor | float) -> None:
        super().__init__()
        low_t = torch.as_tensor(low, dtype=torch.get_default_dtype())
        high_t = torch.as_tensor(high, dtype=torch.get_default_dtype())
        if low_t.shape != high_t.shape:
            raise ValueError(f"BoxUniform: low and high must have one shape, got {tuple(low_t.shape)} and {tuple(high_t.shape)}")
        if not bool((high_t > low_t).all()):
            raise ValueError(f"BoxUniform: high must exceed low everywhere, got low={low_t.tolist()}, high={high_t.tolist()}")
        self.event_shape = tuple(low_t.shape)
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)

    def extra_repr(self) -> str:
        return f"low={self.low.tolist()}, high={self.high.tolist()}"

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        _check_event("BoxUniform", z, self.event_shape)
        check_no_cond("BoxUniform", cond)
        dtype = torch.promote_types(z.dtype, torch.float32)
        inside = ((z >= self.low) & (z < self.high)).flatten(1).all(1)
        density = -torch.log(self.high - self.low).sum().to(dtype)
        return torch.where(inside, density, torch.full_like(density, -math.inf))

    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` samples, uniform in the box, shape ``(n, *event_shape)``."""
        check_no_cond("BoxUniform", cond)
        if temperature != 1.0:
            raise ValueError(f"BoxUniform has no temperature; sample with temperature=1.0, got {temperature}")
        u = torch.rand((n, *self.event_shape), generator=generator, device=self.low.device, dtype=self.low.dtype)
        return self.low + (self.high - self.low) * u
